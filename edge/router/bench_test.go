package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/edge/router/routertest"
	"github.com/meridian-mesh/meridian/shared/table"
)

// benchFleet is routertest's fleet, which scripts/bench/router measures
// too for README's figures.
func benchFleet(tb testing.TB) (*router.Router, map[string][]router.Request, map[string]*table.Route) {
	f, err := routertest.NewFleet()
	if err != nil {
		tb.Fatal(err)
	}
	return f.Router, f.Requests, f.Routes
}

// BenchmarkChoose is one decision: a plan for a request, into a reused
// Plan, as the gateway makes one per request.
func BenchmarkChoose(b *testing.B) {
	r, reqs, _ := benchFleet(b)
	for _, s := range table.Strategies {
		b.Run(s, func(b *testing.B) {
			rs := reqs[s]
			p := &router.Plan{}
			for i := range rs {
				r.Choose(&rs[i], p) // grow the plan's slices
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				r.Choose(&rs[i%len(rs)], p)
			}
		})
	}
}

// BenchmarkBaselineMapLookup is the least a decision could cost: finding
// the model's route in a map.
func BenchmarkBaselineMapLookup(b *testing.B) {
	_, _, routes := benchFleet(b)
	names := make([]string, 0, len(routes))
	for n := range routes {
		names = append(names, n)
	}
	var sink *table.Route
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sink = routes[names[i%len(names)]]
	}
	if sink == nil {
		b.Fatal("no route")
	}
}

// TestBenchFleetPlans keeps the benchmark honest: every strategy's
// requests get plans with targets, peers and providers among them.
func TestBenchFleetPlans(t *testing.T) {
	r, reqs, _ := benchFleet(t)
	kinds := map[router.Kind]int{}
	for _, s := range table.Strategies {
		if len(reqs[s]) == 0 {
			t.Fatalf("no requests under %s", s)
		}
		for i := range reqs[s] {
			p := &router.Plan{}
			r.Choose(&reqs[s][i], p)
			if len(p.Targets) == 0 || p.Strategy != s {
				t.Fatalf("%s: %+v plan %v refusal %+v", s, reqs[s][i], keysOf(p.Targets), p.Refusal)
			}
			for _, c := range p.Targets {
				kinds[c.Kind]++
			}
		}
	}
	if kinds[router.KindPeer] == 0 || kinds[router.KindProvider] == 0 || kinds[router.KindLocal] == 0 {
		t.Fatalf("targets by kind %v", kinds)
	}
}

// BenchmarkSetMembers is what one change of the gossip view costs an
// edge: the router's membership view rebuilt for N members (the fleet's
// 50 models, each member with one of them ready), at 100 and 1,000.
func BenchmarkSetMembers(b *testing.B) {
	r, _, _ := benchFleet(b)
	for _, n := range []int{100, 1000} {
		ms := benchMembers(n)
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				ms[i%n].InFlight++ // a load change, as gossip brings every round
				r.SetMembers(ms)
			}
		})
	}
}

// BenchmarkPatchTable is what one route change costs an edge's router:
// one model's candidates rebuilt, at 100 and 1,000 members. Its cost
// should not grow with the fleet (README, "Fleet scale": the order of
// each hot path).
func BenchmarkPatchTable(b *testing.B) {
	r, _, _ := benchFleet(b)
	for _, n := range []int{100, 1000} {
		ms := benchMembers(n)
		r.SetMembers(ms)
		tab := r.Table()
		model := tab.Table().Routes[0].Model
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.PatchTable(tab, []string{model})
			}
		})
	}
}

// benchMembers is a gossip view of n members, each with one of the
// fleet's 50 models ready.
func benchMembers(n int) []router.Member {
	ms := make([]router.Member, n)
	for i := range ms {
		ms[i] = router.Member{ID: fmt.Sprintf("edge-%04d", i), Region: fmt.Sprintf("region-%d", i%10), Addr: fmt.Sprintf("10.0.%d.%d:7443", i/250, i%250),
			Alive: true, Ready: []string{fmt.Sprintf("model-%02d", i%50)}, InFlight: i % 7, Queued: i % 3, RTT: time.Duration(5+i%90) * time.Millisecond}
	}
	return ms
}
