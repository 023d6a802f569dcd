package publish_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// A change reaches all 50 edges, every control node sees their reports,
// and a state that fails validation reaches none of them.
func TestChangeReachesAllEdges(t *testing.T) {
	ms := newMesh(t, 3)
	ms.write(fleetOps()...)
	edges := ms.startEdges(50, func(i int) []string { return ms.urls() })
	ms.waitEdges(edges, ms.tableRevision(), 30*time.Second)

	// The write's own index: the table revision read now may still be
	// the previous one, before the publisher compiled the write.
	rev := ms.write(modelOps("mistral-large")...).GetIndex()
	ms.waitEdges(edges, rev, 30*time.Second)
	for _, e := range edges {
		e.mu.Lock()
		_, ok := findModel(e.tab.Models, "mistral-large")
		e.mu.Unlock()
		if !ok {
			t.Fatal("an edge's table lacks the new model")
		}
	}
	// Every control node, not just the leader, knows where the edges are.
	for _, c := range ms.ctl {
		wait.For(t, 10*time.Second, "edge reports on "+c.m.Name, func() bool {
			st := c.pub.Status()
			if len(st.Edges) != 50 {
				return false
			}
			for _, e := range st.Edges {
				if e.Revision != rev || e.Lag != 0 || e.Stale || e.Silent {
					return false
				}
			}
			return true
		})
	}

	// Any control node answers snapshot requests: each served some of
	// the 50 edges' (all but certain with a random queue-group pick).
	for _, c := range ms.ctl {
		if v := metricValue(t, c, "meridian_control_table_snapshots_total"); v < 1 {
			t.Errorf("%s answered no snapshot request", c.m.Name)
		}
	}
	if v := metricValue(t, ms.ctl[0], "meridian_control_edges"); v != 50 {
		t.Fatalf("meridian_control_edges sums to %v, want 50", v)
	}
	// An edge that stops reporting shows as silent.
	edges[7].s.Close()
	wait.For(t, 10*time.Second, "a silent edge", func() bool {
		for _, e := range ms.ctl[0].pub.Status().Edges {
			if e.Node == "edge-007" {
				return e.Silent
			}
		}
		return false
	})
	edges = append(edges[:7:7], edges[8:]...)

	// The FSM accepts a route whose only target is the local engine for
	// a model placed nowhere; the compiler rejects the table, and no
	// edge ever sees it.
	if res := ms.write(fsm.PutOp(&controlv1.Model{Id: "orphan", Local: true, Ollama: "orphan:1b"}),
		fsm.PutOp(&controlv1.Route{Model: "orphan", Targets: []*controlv1.Target{{Provider: "local"}}})); res.GetCode() != "" {
		t.Fatalf("write rejected by the FSM: %v", res)
	}
	l := ms.leader()
	wait.For(t, 10*time.Second, "the rejection in status", func() bool {
		st := l.pub.Status()
		return strings.Contains(st.Rejected, "routes[orphan]") && st.TableRevision == rev && st.StateRevision > rev
	})
	if v := metricValue(t, l, "meridian_control_table_rejections_total"); v < 1 {
		t.Fatalf("rejections metric %v", v)
	}
	time.Sleep(3 * hb) // let a wrongly published table arrive, if one were sent
	for _, e := range edges {
		if e.revision() != rev {
			t.Fatalf("an edge moved to %d; the rejected state must never be published", e.revision())
		}
		// Not stale: the heartbeat goes on. A heartbeat late on a loaded
		// machine makes an edge stale for a moment, so wait it out.
		wait.For(t, 10*time.Second, "an edge current on the last valid table", func() bool { return !e.s.Status().Stale })
	}
	// Edges hear of the rejection in the heartbeat.
	for _, e := range edges {
		wait.For(t, 10*time.Second, "the rejection in a heartbeat", func() bool {
			return strings.Contains(e.s.Status().ControlRejected, "routes[orphan]")
		})
	}
	// Fixing the state publishes again.
	fix := ms.write(fsm.DeleteOp(fsm.KindRoute, "orphan")).GetIndex()
	wait.For(t, 10*time.Second, "the rejection to clear", func() bool { return ms.leader().pub.Status().Rejected == "" })
	ms.waitEdges(edges, fix, 30*time.Second)
}

// Kill the leader while changes stream in: every edge converges on the
// final revision.
func TestLeaderKilledWhileChangesStream(t *testing.T) {
	ms := newMesh(t, 3)
	ms.write(fleetOps()...)
	edges := ms.startEdges(50, func(i int) []string { return ms.urls() })
	ms.waitEdges(edges, ms.tableRevision(), 30*time.Second)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 30 {
			ms.write(modelOps(fmt.Sprintf("m-%02d", i))...)
		}
	}()
	// Kill the leader once a few changes are in.
	wait.For(t, 30*time.Second, "changes to stream", func() bool {
		return len(ms.leader().pub.Table().GetEntities().GetModels()) >= 6
	})
	old := ms.leader()
	old.kill()
	wg.Wait()
	// The leader compiles the last write a moment after it returns.
	wait.For(t, 10*time.Second, "the final table with 31 models", func() bool {
		return len(ms.leader().pub.Table().GetEntities().GetModels()) == 31
	})
	final := ms.tableRevision()
	ms.waitEdges(edges, final, 30*time.Second)
	// Both kinds of update ran: deltas for changes, a full table from
	// each new leader.
	var deltas, fulls float64
	for _, c := range ms.ctl {
		deltas, fulls = deltas+updates(t, c, "delta"), fulls+updates(t, c, "full")
	}
	if deltas < 1 || fulls < 2 {
		t.Fatalf("leaders published %v deltas and %v full tables; want deltas and a full table per term", deltas, fulls)
	}
	if ms.leader() == old {
		t.Fatal("the killed node still leads")
	}
}

// Kill the NATS server an edge is connected to: the edge moves to another
// server it learnt of from the cluster, and catches up.
func TestEdgeMovesToAnotherServer(t *testing.T) {
	ms := newMesh(t, 3)
	ms.write(fleetOps()...)
	first := ms.ctl[0]
	e := ms.startEdge(edgeConfig(t, "edge-roam", []string{first.ns.ClientURL()}))
	ms.waitEdges([]*edge{e}, ms.tableRevision(), 20*time.Second)
	wait.For(t, 10*time.Second, "servers discovered", func() error {
		if s := e.s.Status().Servers; len(s) < 3 {
			return fmt.Errorf("the edge knows %v", s)
		}
		return nil
	})
	before := e.s.Status().Server
	first.killNATS()
	ms.write(modelOps("after-move")...)
	rev := ms.tableRevision()
	ms.waitEdges([]*edge{e}, rev, 30*time.Second)
	wait.For(t, 10*time.Second, "a current table on another server", func() bool {
		st := e.s.Status()
		return st.Connected && st.Server != before && !st.Stale
	})
}

// A corrupt, oversized or inconsistent table injected on the bus is
// rejected by every edge, which keeps its table and reports why.
func TestCorruptTableRejected(t *testing.T) {
	ms := newMesh(t, 3)
	ms.write(fleetOps()...)
	var edges []*edge
	for i := range 3 {
		cfg := edgeConfig(t, fmt.Sprintf("edge-%d", i), ms.urls())
		cfg.MaxBytes = 64 << 10
		edges = append(edges, ms.startEdge(cfg))
	}
	rev := ms.tableRevision()
	ms.waitEdges(edges, rev, 20*time.Second)
	good := ms.leader().pub.Table()

	dangling := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: rev + 1000, Entities: &tablev1.Entities{
		Models: []*controlv1.Model{{Id: "x"}},
		Routes: []*controlv1.Route{{Model: "x", Targets: []*controlv1.Target{{Provider: "ghost"}}}},
	}}
	badURL := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: rev + 1001, Entities: &tablev1.Entities{
		Providers: []*controlv1.Provider{{Id: "p", Kind: "openai", BaseUrl: "ftp://nowhere"}},
	}}
	for _, bad := range []*tablev1.RoutingTable{dangling, badURL} {
		bad.ClusterId, bad.Epoch = good.GetClusterId(), good.GetEpoch()
	}
	missing := tablewire.Diff(good, good)
	missing.Revision = rev + 1002
	missing.Deletes.Nodes = []string{"no-such-node"}
	big := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: rev + 1003, Entities: &tablev1.Entities{},
		ClusterId: good.GetClusterId(), Epoch: good.GetEpoch()}
	for i := range 3000 {
		big.Entities.Tenants = append(big.Entities.Tenants, &controlv1.Tenant{Id: fmt.Sprintf("tenant-%05d", i), Name: strings.Repeat("x", 20)})
	}
	injections := []struct {
		name string
		msg  []byte
		want string
	}{
		{"garbage", []byte("\xff\xff\xffnot a table"), "does not decode"},
		{"dangling reference", encodeUpdate(t, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: dangling}}), "unknown provider"},
		{"edge validation", encodeUpdate(t, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: badURL}}), "base_url"},
		{"delete of a missing entity", encodeUpdate(t, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Delta{Delta: missing}}), "no-such-node"},
		{"oversized", encodeUpdate(t, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: big}}), "too large"},
	}
	// Signed with the cluster's key, as a leader with a bug would send
	// them: the edge's own checks must catch each. (Unsigned, the edge
	// would refuse them before looking: TestForgedTablesAreRefused in
	// edge/tablesync.)
	key := ms.signingKey()
	nc := ms.leader().nc
	for _, in := range injections {
		if err := nc.Publish(tablewire.SubjectUpdate, tablewire.Sign(key, tablewire.ContextUpdate, tablewire.SignatureField, in.msg)); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		for _, e := range edges {
			wait.For(t, 10*time.Second, in.name+" rejected", func() bool {
				st := e.s.Status()
				return strings.Contains(st.RejectedReason, in.want) || strings.Contains(st.Unverified, in.want)
			})
			if e.revision() != rev {
				t.Fatalf("%s: the edge left revision %d for %d", in.name, rev, e.revision())
			}
		}
	}
	// The control plane hears of the rejection.
	wait.For(t, 10*time.Second, "rejections in status", func() bool {
		for _, es := range ms.leader().pub.Status().Edges {
			if es.RejectedReason == "" {
				return false
			}
		}
		return true
	})
	// A real change still flows, and clears the rejection.
	res := ms.write(modelOps("after-corruption")...)
	ms.waitEdges(edges, res.GetIndex(), 20*time.Second)
	for _, e := range edges {
		if r := e.s.Status().RejectedReason; r != "" {
			t.Fatalf("rejection not cleared by a good table: %s; %+v (want %d)", r, e.s.Status(), ms.tableRevision())
		}
	}
}

// An edge restarted while the whole control plane is down serves from its
// disk table, and says it is stale.
func TestRestartWhileControlDown(t *testing.T) {
	ms := newMesh(t, 3)
	ms.write(fleetOps()...)
	ms.write(modelOps("on-disk")...)
	cfg := edgeConfig(t, "edge-restart", ms.urls())
	cfg.TableKeys = ms.c.TableKeys()
	e := ms.startEdge(cfg)
	rev := ms.tableRevision()
	ms.waitEdges([]*edge{e}, rev, 20*time.Second)
	wait.For(t, 10*time.Second, "the table on disk", func() bool { return e.s.Status().CachedRevision == rev })
	for _, c := range ms.ctl {
		c.kill()
	}
	e.s.Close()

	restarted := ms.startEdge(cfg)
	st := restarted.s.Status()
	if restarted.revision() != rev || st.Source != "disk" || !st.Stale {
		t.Fatalf("restarted edge: revision %d, status %+v; want %d from disk, stale", restarted.revision(), st, rev)
	}
	restarted.mu.Lock()
	_, ok := findModel(restarted.tab.Models, "on-disk")
	restarted.mu.Unlock()
	if !ok {
		t.Fatal("the disk table lacks the model")
	}
	// It keeps saying so while nothing answers.
	time.Sleep(5 * hb)
	if !restarted.s.Status().Stale {
		t.Fatal("stale flag cleared with no control plane")
	}
}
