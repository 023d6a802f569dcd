package publish

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
