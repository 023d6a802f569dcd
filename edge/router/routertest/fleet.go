// Package routertest builds fixtures for edge/router's tests and
// benchmarks: the one benchmark fleet, which `go test -bench` in
// edge/router and scripts/bench/router both measure, so their figures
// are of the same thing. It is for tests and benchmarks only and must
// never reach a binary.
package routertest

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
)

// The fleet: 100 nodes in 10 regions, 30 providers, 50 models each
// placed on 5 nodes and routed to 3 providers, model i under strategy
// table.Strategies[i%7], every third route capped by price, and a gossip
// view of all 100 nodes with the models placed on them ready. Half the
// providers have a success on record.

var regions = []router.Point{
	{Lat: 53.35, Lon: -6.26}, {Lat: 50.11, Lon: 8.68}, {Lat: 38.9, Lon: -77.4}, {Lat: 37.77, Lon: -122.42},
	{Lat: -23.55, Lon: -46.63}, {Lat: 19.07, Lon: 72.88}, {Lat: 1.35, Lon: 103.82}, {Lat: 35.68, Lon: 139.69},
	{Lat: -33.87, Lon: 151.21}, {Lat: 25.2, Lon: 55.27},
}

const (
	numNodes, numProviders, numModels, placedOn, targetsPerRoute = 100, 30, 50, 5, 3
)

// linksUp is a link set with every link up.
type linksUp struct{}

func (linksUp) Down(string) bool { return false }

// engine is the node's engine: the models placed on it are ready.
type engine map[string]bool

func (e engine) Ready(m string) bool { return e[m] }
func (engine) Busy() int             { return 3 }

// Fleet is the measured fleet, seen from edge-00.
type Fleet struct {
	// Router is edge-00's router with the table, members and provider
	// statistics set.
	Router *router.Router
	// Requests are, per strategy, the requests to cycle through: one
	// per model under it and client region, some from a tenant allowed
	// half the regions.
	Requests map[string][]router.Request
	// Routes are the compiled routes by model name, for a baseline that
	// only looks a route up.
	Routes map[string]*table.Route
}

// NewFleet builds the fleet. It is deterministic: every call builds the
// same table, members and statistics.
func NewFleet() (*Fleet, error) {
	tab := &table.Table{Revision: 1}
	for i, p := range regions {
		tab.Regions = append(tab.Regions, table.Region{ID: fmt.Sprintf("region-%d", i), Latitude: p.Lat, Longitude: p.Lon})
	}
	for i := range numNodes {
		tab.Nodes = append(tab.Nodes, table.Node{ID: fmt.Sprintf("edge-%02d", i), Region: fmt.Sprintf("region-%d", i%len(regions))})
	}
	for i := range numProviders {
		tab.Providers = append(tab.Providers, table.Provider{ID: fmt.Sprintf("prov-%02d", i), Kind: table.KindOpenAI,
			BaseURL: fmt.Sprintf("http://127.0.0.1:%d/v1", 9000+i), Region: fmt.Sprintf("region-%d", i%len(regions))})
	}
	placed := map[string][]string{} // node → models
	for i := range numModels {
		id := fmt.Sprintf("model-%02d", i)
		tab.Models = append(tab.Models, table.Model{ID: id, Capabilities: []string{table.CapTools, table.CapJSON},
			ContextLength: 8192, Local: &table.LocalSource{GGUF: "/models/" + id + ".gguf"}})
		for k := range placedOn {
			node := tab.Nodes[(i*7+k*19)%numNodes].ID
			tab.Placements = append(tab.Placements, table.Placement{Model: id, Node: node})
			placed[node] = append(placed[node], id)
		}
		rt := table.Route{Model: id, Strategy: table.Strategies[i%len(table.Strategies)]}
		for k := range targetsPerRoute {
			p := tab.Providers[(i+k*11)%numProviders].ID
			rt.Targets = append(rt.Targets, table.Target{Provider: p, Weight: 1 + k})
			tab.Prices = append(tab.Prices, table.Price{Provider: p, Model: id, Input: float64(1 + (i+k)%5), Output: float64(3 + (i*k)%7)})
		}
		if i%3 == 0 {
			rt.MaxPrice = 12
		}
		tab.Routes = append(tab.Routes, &rt)
	}
	tab.Tenants = []table.Tenant{{ID: "tenant-half", AllowedRegions: []string{"region-0", "region-2", "region-4", "region-6", "region-8"}}}
	c, err := table.Compile(tab)
	if err != nil {
		return nil, err
	}
	self := tab.Nodes[0].ID
	eng := engine{}
	for _, m := range placed[self] {
		eng[m] = true
	}
	cfg := router.DefaultConfig()
	cfg.Node, cfg.Region, cfg.Links, cfg.Local = self, tab.Nodes[0].Region, linksUp{}, eng
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
		for j, p := range regions {
			req := router.Request{Model: m.ID, Client: router.Point{Lat: p.Lat + 1, Lon: p.Lon - 1}, HasClient: true, PromptTokens: 400, Needs: router.NeedTools}
			if j%4 == 3 {
				req.Tenant = "tenant-half"
			}
			reqs[s] = append(reqs[s], req)
		}
	}
	return &Fleet{Router: r, Requests: reqs, Routes: routes}, nil
}
