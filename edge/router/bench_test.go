package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
)

// The benchmark fleet: 100 nodes in 10 regions, 30 providers, 50 models
// each placed on 5 nodes and routed to 3 providers, model i under
// strategy table.Strategies[i%7], and a gossip view of all 100 nodes with
// the models placed on them ready. scripts/bench/router builds the same
// fleet (it cannot import test code) and prints the figures for README.

var benchRegions = []router.Point{
	{Lat: 53.35, Lon: -6.26}, {Lat: 50.11, Lon: 8.68}, {Lat: 38.9, Lon: -77.4}, {Lat: 37.77, Lon: -122.42},
	{Lat: -23.55, Lon: -46.63}, {Lat: 19.07, Lon: 72.88}, {Lat: 1.35, Lon: 103.82}, {Lat: 35.68, Lon: 139.69},
	{Lat: -33.87, Lon: 151.21}, {Lat: 25.2, Lon: 55.27},
}

const (
	benchNodes, benchProviders, benchModels, benchPlacedOn, benchTargets = 100, 30, 50, 5, 3
)

// benchLinkSet is a link set with every link up.
type benchLinkSet struct{}

func (benchLinkSet) Down(string) bool { return false }

type benchEngine map[string]bool

func (e benchEngine) Ready(m string) bool { return e[m] }
func (benchEngine) Busy() int             { return 3 }

// benchFleet returns the router, seen from edge-00, and per strategy the
// requests to cycle through.
func benchFleet(tb testing.TB) (*router.Router, map[string][]router.Request, map[string]*table.Route) {
	tab := &table.Table{Revision: 1}
	for i, p := range benchRegions {
		tab.Regions = append(tab.Regions, table.Region{ID: fmt.Sprintf("region-%d", i), Latitude: p.Lat, Longitude: p.Lon})
	}
	for i := range benchNodes {
		tab.Nodes = append(tab.Nodes, table.Node{ID: fmt.Sprintf("edge-%02d", i), Region: fmt.Sprintf("region-%d", i%len(benchRegions))})
	}
	for i := range benchProviders {
		tab.Providers = append(tab.Providers, table.Provider{ID: fmt.Sprintf("prov-%02d", i), Kind: table.KindOpenAI,
			BaseURL: fmt.Sprintf("http://127.0.0.1:%d/v1", 9000+i), Region: fmt.Sprintf("region-%d", i%len(benchRegions))})
	}
	placed := map[string][]string{} // node → models
	for i := range benchModels {
		id := fmt.Sprintf("model-%02d", i)
		tab.Models = append(tab.Models, table.Model{ID: id, Capabilities: []string{table.CapTools, table.CapJSON},
			ContextLength: 8192, Local: &table.LocalSource{GGUF: "/models/" + id + ".gguf"}})
		for k := range benchPlacedOn {
			node := tab.Nodes[(i*7+k*19)%benchNodes].ID
			tab.Placements = append(tab.Placements, table.Placement{Model: id, Node: node})
			placed[node] = append(placed[node], id)
		}
		rt := table.Route{Model: id, Strategy: table.Strategies[i%len(table.Strategies)]}
		for k := range benchTargets {
			p := tab.Providers[(i+k*11)%benchProviders].ID
			rt.Targets = append(rt.Targets, table.Target{Provider: p, Weight: 1 + k})
			tab.Prices = append(tab.Prices, table.Price{Provider: p, Model: id, Input: float64(1 + (i+k)%5), Output: float64(3 + (i*k)%7)})
		}
		if i%3 == 0 {
			rt.MaxPrice = 12
		}
		tab.Routes = append(tab.Routes, rt)
	}
	tab.Tenants = []table.Tenant{{ID: "tenant-half", AllowedRegions: []string{"region-0", "region-2", "region-4", "region-6", "region-8"}}}
	c, err := table.Compile(tab)
	if err != nil {
		tb.Fatal(err)
	}
	self := tab.Nodes[0].ID
	engine := benchEngine{}
	for _, m := range placed[self] {
		engine[m] = true
	}
	cfg := router.DefaultConfig()
	cfg.Node, cfg.Region, cfg.Links, cfg.Local = self, tab.Nodes[0].Region, benchLinkSet{}, engine
	r := router.New(cfg)
	r.SetTable(c)
	var ms []router.Member
	for i, n := range tab.Nodes {
		ms = append(ms, router.Member{ID: n.ID, Region: n.Region, Addr: fmt.Sprintf("10.0.%d.%d:7443", i/250, i%250), Alive: true,
			Ready: placed[n.ID], InFlight: i % 7, Queued: i % 3, RTT: time.Duration(5+i%90) * time.Millisecond})
	}
	r.SetMembers(ms)
	now := time.Now()
	for i, p := range tab.Providers {
		if i%2 == 0 {
			s := r.Stats("provider/" + p.ID)
			s.Begin(now, false)
			s.End(now, true, false, time.Duration(100+i*10)*time.Millisecond, cfg.BreakerThreshold, cfg.BreakerCooldown)
		}
	}
	reqs := map[string][]router.Request{}
	routes := map[string]*table.Route{}
	for i := range tab.Models {
		m := &tab.Models[i]
		routes[m.ID], _ = c.Route(m.ID)
		s := routes[m.ID].Strategy
		for j, p := range benchRegions {
			req := router.Request{Model: m.ID, Client: router.Point{Lat: p.Lat + 1, Lon: p.Lon - 1}, HasClient: true, PromptTokens: 400, Needs: router.NeedTools}
			if j%4 == 3 {
				req.Tenant = "tenant-half"
			}
			reqs[s] = append(reqs[s], req)
		}
	}
	return r, reqs, routes
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
