package publish

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/compile"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Reports become edges in the status: lag against the table, silence
// after a few missed intervals, forgotten after a day; bad reports and
// reports beyond the cap are dropped.
func TestEdgeReports(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cfg := DefaultConfig()
	cfg.MaxEdges, cfg.Now = 2, func() time.Time { return now }
	p := &Publisher{cfg: cfg, m: newMetrics(nil), edges: map[string]*edgeRecord{}}
	p.good.Store(&compiled{table: &tablev1.RoutingTable{Revision: 10}})
	report := func(r *tablev1.AppliedReport) {
		b, _ := tablewire.Encode(r)
		p.recordApplied(&nats.Msg{Data: b})
	}
	report(&tablev1.AppliedReport{Schema: 1, Node: "a", Revision: 10, IntervalMs: 1000})
	report(&tablev1.AppliedReport{Schema: 1, Node: "b", Revision: 7, IntervalMs: 1000, Stale: true})
	report(&tablev1.AppliedReport{Schema: 1, Node: "c", Revision: 7}) // over the cap
	report(&tablev1.AppliedReport{Schema: 1, Revision: 7})            // no node
	p.recordApplied(&nats.Msg{Data: []byte("\xff\xff not a report")}) // garbage
	st := p.Status()
	if len(st.Edges) != 2 || st.Edges[0].Lag != 0 || st.Edges[1].Lag != 3 || !st.Edges[1].Stale || st.Edges[0].Silent {
		t.Fatalf("edges %+v", st.Edges)
	}
	now = now.Add(2 * time.Second)
	report(&tablev1.AppliedReport{Schema: 1, Node: "b", Revision: 10, IntervalMs: 1000})
	now = now.Add(2 * time.Second)
	st = p.Status()
	if !st.Edges[0].Silent || st.Edges[1].Silent || st.Edges[1].Lag != 0 {
		t.Fatalf("after 4 s, edge a (1 s interval) is silent and b is not: %+v", st.Edges)
	}
	now = now.Add(25 * time.Hour)
	if st = p.Status(); len(st.Edges) != 0 {
		t.Fatalf("silent edges not forgotten: %+v", st.Edges)
	}
}

// An edge's ready models reach the status, on the edge and against the
// placements of the last valid table: a node placement, and a region
// placement resolved as every edge resolves it. Silent edges count as
// not ready.
func TestReadyModelsInStatus(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return now }
	p := &Publisher{cfg: cfg, m: newMetrics(nil), edges: map[string]*edgeRecord{}}
	tab := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: 10, Entities: &tablev1.Entities{
		Regions: []*controlv1.Region{{Id: "eu-west"}, {Id: "us-east"}},
		Nodes:   []*controlv1.Node{{Id: "edge-a", Region: "eu-west"}, {Id: "edge-b", Region: "eu-west"}, {Id: "edge-c", Region: "eu-west"}, {Id: "edge-u", Region: "us-east"}},
		Models:  []*controlv1.Model{{Id: "tiny", Local: true, Ollama: "tinyllama"}},
		Placements: []*controlv1.Placement{
			{Id: "tiny-eu", Model: "tiny", Region: "eu-west", Desired: 2},
			{Id: "tiny-u", Model: "tiny", Node: "edge-u", Desired: 1},
		},
	}}
	ct, err := compile.Check(compile.DefaultConfig(), tab)
	if err != nil {
		t.Fatal(err)
	}
	p.good.Store(&compiled{table: ct.Table, placements: resolvePlacements(ct.Table, ct.Edge)})
	st := p.Status()
	if len(st.Placements) != 2 {
		t.Fatalf("placements %+v", st.Placements)
	}
	eu := st.Placements[0]
	if eu.ID != "tiny-eu" || eu.Desired != 2 || len(eu.Nodes) != 2 || len(eu.Ready) != 0 {
		t.Fatalf("region placement %+v", eu)
	}
	for _, n := range eu.Nodes {
		if !slices.Contains(ct.Edge.PlacedOn("tiny"), n) {
			t.Fatalf("region placement resolves to %v; edges place tiny on %v", eu.Nodes, ct.Edge.PlacedOn("tiny"))
		}
	}

	report := func(r *tablev1.AppliedReport) {
		b, _ := tablewire.Encode(r)
		p.recordApplied(&nats.Msg{Data: b})
	}
	report(&tablev1.AppliedReport{Schema: 1, Node: eu.Nodes[0], Revision: 10, IntervalMs: 1000, ReadyModels: []string{"tiny", "other"}})
	report(&tablev1.AppliedReport{Schema: 1, Node: eu.Nodes[1], Revision: 10, IntervalMs: 1000})
	report(&tablev1.AppliedReport{Schema: 1, Node: "edge-u", Revision: 10, IntervalMs: 1000, ReadyModels: []string{"tiny"}})
	st = p.Status()
	e, ok := edgeByNode(st, eu.Nodes[0])
	if !ok || !slices.Equal(e.ReadyModels, []string{"other", "tiny"}) {
		t.Fatalf("edge %s: %+v", eu.Nodes[0], e)
	}
	if got := st.Placements[0].Ready; !slices.Equal(got, []string{eu.Nodes[0]}) {
		t.Fatalf("tiny-eu ready on %v, want [%s]", got, eu.Nodes[0])
	}
	if got := st.Placements[1]; !slices.Equal(got.Nodes, []string{"edge-u"}) || !slices.Equal(got.Ready, []string{"edge-u"}) {
		t.Fatalf("tiny-u %+v", got)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"ready_models":["other","tiny"]`) || !strings.Contains(string(b), `"ready":["edge-u"]`) {
		t.Fatalf("status JSON lacks the ready models: %s", b)
	}

	// An edge gone silent is not ready, whatever it said last.
	now = now.Add(10 * time.Second)
	if got := p.Status().Placements[1].Ready; len(got) != 0 {
		t.Fatalf("a silent edge counts as ready: %v", got)
	}
}

func edgeByNode(st Status, node string) (EdgeStatus, bool) {
	for _, e := range st.Edges {
		if e.Node == node {
			return e, true
		}
	}
	return EdgeStatus{}, false
}

// An edge holding a newer table than the control plane (restored from an
// older backup) is "ahead", never "current"; one in an older epoch is
// behind whatever its revision.
func TestEdgeAheadIsNotCurrent(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return now }
	p := &Publisher{cfg: cfg, m: newMetrics(nil), edges: map[string]*edgeRecord{}}
	p.good.Store(&compiled{table: &tablev1.RoutingTable{Revision: 10, Epoch: 2}})
	report := func(r *tablev1.AppliedReport) {
		b, _ := tablewire.Encode(r)
		p.recordApplied(&nats.Msg{Data: b})
	}
	report(&tablev1.AppliedReport{Schema: 1, Node: "a", Revision: 50, Epoch: 2, IntervalMs: 1000, Source: "control"})
	report(&tablev1.AppliedReport{Schema: 1, Node: "b", Revision: 3, Epoch: 3, IntervalMs: 1000, Source: "control"})
	report(&tablev1.AppliedReport{Schema: 1, Node: "c", Revision: 50, Epoch: 1, IntervalMs: 1000, Source: "control"})
	report(&tablev1.AppliedReport{Schema: 1, Node: "d", Revision: 10, Epoch: 2, IntervalMs: 1000, Source: "control"})
	st := p.Status()
	want := map[string]struct {
		ahead bool
		lag   bool
	}{"a": {true, false}, "b": {true, false}, "c": {false, true}, "d": {false, false}}
	for _, e := range st.Edges {
		if w := want[e.Node]; e.Ahead != w.ahead || (e.Lag > 0) != w.lag {
			t.Errorf("edge %s: ahead %v lag %d, want ahead %v lagging %v", e.Node, e.Ahead, e.Lag, w.ahead, w.lag)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(edgesCollector{p, prometheus.NewDesc("meridian_control_edges", "", []string{"state"}, nil)})
	mfs, _ := reg.Gather()
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
	}
	if got["ahead"] != 2 || got["current"] != 1 || got["behind"] != 1 {
		t.Fatalf("edges by state %v, want 2 ahead, 1 current, 1 behind", got)
	}
}
