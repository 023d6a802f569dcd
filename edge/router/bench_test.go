package router_test

import (
	"testing"

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
