package router

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

type allLinksUp struct{}

func (allLinksUp) Down(string) bool { return false }

// membersRouter is a router on "self" for model m, placed on n1 and n2
// and routed least-busy, so that the members' load orders its peers.
func membersRouter(t *testing.T) *Router {
	t.Helper()
	tab, err := table.Compile(&table.Table{
		Regions:    []table.Region{{ID: "eu"}},
		Nodes:      []table.Node{{ID: "self", Region: "eu"}, {ID: "n1", Region: "eu"}, {ID: "n2", Region: "eu"}},
		Models:     []table.Model{{ID: "m", Local: &table.LocalSource{GGUF: "/models/m.gguf"}}},
		Placements: []table.Placement{{Model: "m", Node: "n1"}, {Model: "m", Node: "n2"}},
		Routes:     []*table.Route{{Model: "m", Strategy: table.StrategyLeastBusy}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Node, cfg.Region, cfg.Links = "self", "eu", allLinksUp{}
	r := New(cfg)
	r.SetTable(tab)
	return r
}

func firstTarget(r *Router) string {
	var p Plan
	r.Choose(&Request{Model: "m"}, &p)
	if len(p.Targets) == 0 {
		return ""
	}
	return p.Targets[0].Key
}

// TestLoadOnlyMemberChange checks that a change of members' load alone
// updates the view in place (no rebuild) and that plans follow it, and
// that any other change rebuilds.
func TestLoadOnlyMemberChange(t *testing.T) {
	r := membersRouter(t)
	ms := []Member{
		{ID: "n1", Region: "eu", Addr: "127.0.0.1:1", Alive: true, Ready: []string{"m"}, InFlight: 10},
		{ID: "n2", Region: "eu", Addr: "127.0.0.1:2", Alive: true, Ready: []string{"m"}},
	}
	r.SetMembers(ms)
	if got := firstTarget(r); got != "peer/n2" {
		t.Fatalf("first target %q with n1 busy, want peer/n2", got)
	}
	before := r.view.Load()
	ms[0].InFlight, ms[1].Queued = 0, 10
	r.SetMembers(ms)
	if r.view.Load() != before {
		t.Fatal("a change of load alone rebuilt the view")
	}
	if got := firstTarget(r); got != "peer/n1" {
		t.Fatalf("first target %q with n2 busy, want peer/n1", got)
	}
	ms[1].Queued = 0 // the caller's slice is copied: this must not reach the router
	if got := firstTarget(r); got != "peer/n1" {
		t.Fatalf("first target %q after the caller changed its own slice, want peer/n1", got)
	}
	ms[1].Queued = 10
	ms[0].Alive = false
	r.SetMembers(ms)
	if r.view.Load() == before {
		t.Fatal("a member's death did not rebuild the view")
	}
	var p Plan
	r.Choose(&Request{Model: "m"}, &p)
	if len(p.Targets) != 1 || p.Targets[0].Key != "peer/n2" {
		t.Fatalf("targets %v with n1 dead, want only peer/n2", p.Targets)
	}
}

// TestMemberChangesMatchRebuild applies random sequences of member
// changes, load alone or anything, and checks after each that the
// router's members are what a router given only the last list holds.
func TestMemberChangesMatchRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for seq := range 50 {
		r := membersRouter(t)
		var ms []Member
		for i := range 4 {
			ms = append(ms, Member{ID: fmt.Sprintf("n%d", i), Region: "eu", Addr: "127.0.0.1:1", Alive: true, Ready: []string{"m"}})
		}
		for step := range 30 {
			ms = append([]Member(nil), ms...)
			for i := range ms {
				if rng.IntN(2) == 0 {
					ms[i].InFlight, ms[i].Queued = rng.IntN(5), rng.IntN(5)
					ms[i].RTT = time.Duration(rng.IntN(50)) * time.Millisecond
				}
			}
			if rng.IntN(4) == 0 { // now and then, a change of more than load
				i := rng.IntN(len(ms))
				switch rng.IntN(3) {
				case 0:
					ms[i].Alive = !ms[i].Alive
				case 1:
					ms[i].Draining = !ms[i].Draining
				default:
					ms[i].Ready = nil
				}
			}
			r.SetMembers(ms)
			fresh := membersRouter(t)
			fresh.SetMembers(ms)
			got, want := r.view.Load().members, fresh.view.Load().members
			if len(got) != len(want) {
				t.Fatalf("sequence %d step %d: %d members, want %d", seq, step, len(got), len(want))
			}
			for id, c := range want {
				if !reflect.DeepEqual(got[id].get(), c.get()) {
					t.Fatalf("sequence %d step %d: member %s is %+v, want %+v", seq, step, id, got[id].get(), c.get())
				}
			}
			// The candidates hold the same members too.
			mv, _ := r.view.Load().models.Get("m")
			for _, c := range mv.cands {
				if c.kind == KindPeer && c.member != nil && c.member != got[c.id] {
					t.Fatalf("sequence %d step %d: candidate %s holds another view's member", seq, step, c.key)
				}
			}
			if a, b := firstTarget(r), firstTarget(fresh); a != b && !tiedFirst(fresh, ms) {
				t.Fatalf("sequence %d step %d: first target %s, a fresh router's %s", seq, step, a, b)
			}
		}
	}
}

// tiedFirst reports whether two live members share the lowest load, when
// either may come first.
func tiedFirst(r *Router, ms []Member) bool {
	low, n := -1, 0
	for _, m := range ms {
		if !m.Alive || m.Draining || len(m.Ready) == 0 {
			continue
		}
		switch b := m.InFlight + m.Queued; {
		case low < 0 || b < low:
			low, n = b, 1
		case b == low:
			n++
		}
	}
	return n > 1
}
