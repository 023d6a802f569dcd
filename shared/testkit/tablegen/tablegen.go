// Package tablegen makes random routing tables and random deltas to
// them, valid and invalid, for property tests that compare a table
// patched one delta at a time with the same table built whole. It is
// test support: production code never imports it.
package tablegen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Table returns a valid table at revision 1 with routes cloud routes,
// a few local models placed in the fleet, keys and tenants.
func Table(rng *rand.Rand, routes int) *tablev1.RoutingTable {
	e := &tablev1.Entities{
		Regions: []*controlv1.Region{{Id: "ap", Latitude: 1, Longitude: 103}, {Id: "eu", Latitude: 50, Longitude: 8}, {Id: "us", Latitude: 39, Longitude: -77}},
		Providers: []*controlv1.Provider{
			{Id: "local", Kind: "local"},
			{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OAI", Region: "us"},
			{Id: "ant", Preset: "anthropic", SecretRef: "env:MERIDIAN_SECRET_ANT", Region: "eu"},
			{Id: "gone", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_UNSET"},
		},
		Tenants: []*controlv1.Tenant{{Id: "acme"}, {Id: "beta", AllowedRegions: []string{"eu"}}, {Id: "corp", Rpm: 5}},
	}
	for i := range 6 {
		e.Nodes = append(e.Nodes, &controlv1.Node{Id: fmt.Sprintf("edge-%d", i), Region: []string{"ap", "eu", "us"}[i%3]})
	}
	for i := range 3 {
		id := fmt.Sprintf("tiny-%d", i)
		e.Models = append(e.Models, &controlv1.Model{Id: id, Local: true, Ollama: id})
		e.Placements = append(e.Placements, &controlv1.Placement{Id: "p-" + id, Model: id, Region: []string{"ap", "eu", "us"}[i], Desired: 1})
		e.Routes = append(e.Routes, &controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "local"}}})
	}
	for i := range routes {
		id := fmt.Sprintf("model-%04d", i)
		e.Models = append(e.Models, &controlv1.Model{Id: id})
		e.Routes = append(e.Routes, Route(rng, id, true))
		e.Prices = append(e.Prices, &controlv1.Price{Provider: "oai", Model: id, Input: 1, Output: 2})
	}
	for i := range 5 {
		e.Keys = append(e.Keys, Key(rng, fmt.Sprintf("key-%d", i), true))
	}
	tablewire.Sort(e)
	return &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: 1, Epoch: 1, ClusterId: "gen", Entities: e}
}

// Route returns a route for model; valid means one that passes
// validation in a table from Table (a cloud model), otherwise it may be
// anything.
func Route(rng *rand.Rand, model string, valid bool) *controlv1.Route {
	providers := []string{"oai", "ant", "gone"}
	if !valid {
		providers = append(providers, "nope", "local")
	}
	r := &controlv1.Route{Model: model, Strategy: []string{"", "ordered", "cheapest", "nearest"}[rng.IntN(4)]}
	for range 1 + rng.IntN(2) {
		r.Targets = append(r.Targets, &controlv1.Target{Provider: providers[rng.IntN(len(providers))], Model: fmt.Sprint("up-", rng.IntN(3)), Weight: uint32(rng.IntN(3))})
	}
	if rng.IntN(3) == 0 {
		r.Fallbacks = append(r.Fallbacks, &controlv1.Target{Provider: providers[rng.IntN(len(providers))]})
	}
	if rng.IntN(4) == 0 {
		regions := []string{"eu", "us"}
		if !valid {
			regions = append(regions, "ap", "mars")
		}
		r.AllowedRegions = []string{regions[rng.IntN(len(regions))]}
		if valid {
			// A provider in the region keeps it servable.
			r.Targets[0].Provider = map[string]string{"eu": "ant", "us": "oai"}[r.AllowedRegions[0]]
		}
	}
	return r
}

// Key returns a key; valid means its tenant exists in a table from Table.
func Key(rng *rand.Rand, id string, valid bool) *controlv1.Key {
	tenants := []string{"", "acme", "beta", "corp"}
	if !valid {
		tenants = append(tenants, "ghost")
	}
	return &controlv1.Key{Id: id, Hash: fmt.Sprintf("sha256:%064x", rng.Uint64()), Tenant: tenants[rng.IntN(len(tenants))], Rpm: uint32(rng.IntN(100))}
}

// Delta returns a random delta to t, from t's revision to the next, and
// the table it should make when applied (nil when it should be
// rejected, which the caller decides by validating it). Most deltas touch
// only routes, keys and tenant states; some are invalid (unknown
// providers or tenants, deletes of missing IDs); one in fleetEvery (0:
// never) changes the fleet too.
func Delta(rng *rand.Rand, t *tablev1.RoutingTable, fleetEvery int) *tablev1.TableDelta {
	e := t.GetEntities()
	d := &tablev1.TableDelta{Schema: tablewire.Schema, PrevRevision: t.GetRevision(), Revision: t.GetRevision() + 1, Epoch: t.GetEpoch(),
		Upserts: &tablev1.Entities{}, Deletes: &tablev1.EntityIDs{}}
	valid := rng.IntN(5) > 0
	for range 1 + rng.IntN(3) {
		switch rng.IntN(8) {
		case 0, 1, 2: // edit a route (the common change)
			rs := e.GetRoutes()
			r := rs[rng.IntN(len(rs))]
			if strings.HasPrefix(r.GetModel(), "tiny-") {
				n := proto.Clone(r).(*controlv1.Route)
				n.Strategy = []string{"", "ordered", "least-busy"}[rng.IntN(3)]
				d.Upserts.Routes = append(d.Upserts.Routes, n)
			} else {
				d.Upserts.Routes = append(d.Upserts.Routes, Route(rng, r.GetModel(), valid))
			}
		case 3: // a route for a model without one, or a route deleted
			ms := e.GetModels()
			m := ms[rng.IntN(len(ms))].GetId()
			if hasRoute(e, m) && rng.IntN(2) == 0 {
				d.Deletes.Routes = append(d.Deletes.Routes, m)
			} else if !strings.HasPrefix(m, "tiny-") {
				d.Upserts.Routes = append(d.Upserts.Routes, Route(rng, m, valid))
			}
		case 4: // a key added, changed or revoked
			id := fmt.Sprintf("key-%d", rng.IntN(8))
			if rng.IntN(3) == 0 {
				d.Deletes.Keys = append(d.Deletes.Keys, id) // may be missing: invalid
			} else {
				d.Upserts.Keys = append(d.Upserts.Keys, Key(rng, id, valid))
			}
		case 5: // a tenant's budget state
			tn := []string{"acme", "beta", "corp", "ghost"}[rng.IntN(3+b2i(!valid))]
			if rng.IntN(3) == 0 && slices.ContainsFunc(e.GetTenantStates(), func(s *tablev1.TenantState) bool { return s.GetTenant() == tn }) {
				d.Deletes.TenantStates = append(d.Deletes.TenantStates, tn)
			} else {
				d.Upserts.TenantStates = append(d.Upserts.TenantStates, &tablev1.TenantState{Tenant: tn, Exhausted: true, ExhaustedUntilUnixMs: int64(1 + rng.IntN(1e9))})
			}
		case 6: // a price
			rs := e.GetRoutes()
			m := rs[rng.IntN(len(rs))].GetModel()
			d.Upserts.Prices = append(d.Upserts.Prices, &controlv1.Price{Provider: "ant", Model: m, Input: float64(rng.IntN(5))})
		case 7:
			if fleetEvery > 0 && rng.IntN(fleetEvery) == 0 {
				switch rng.IntN(3) {
				case 0: // a node joins
					d.Upserts.Nodes = append(d.Upserts.Nodes, &controlv1.Node{Id: fmt.Sprintf("edge-%d", 6+rng.IntN(4)), Region: []string{"ap", "eu", "us"}[rng.IntN(3)]})
				case 1: // a placement moves
					i := rng.IntN(3)
					d.Upserts.Placements = append(d.Upserts.Placements, &controlv1.Placement{Id: fmt.Sprintf("p-tiny-%d", i), Model: fmt.Sprintf("tiny-%d", i), Region: []string{"ap", "eu", "us"}[rng.IntN(3)], Desired: uint32(1 + rng.IntN(2))})
				case 2: // a new model with its route
					id := fmt.Sprintf("new-%d", rng.IntN(20))
					d.Upserts.Models = append(d.Upserts.Models, &controlv1.Model{Id: id})
					d.Upserts.Routes = append(d.Upserts.Routes, Route(rng, id, valid))
				}
			}
		}
	}
	return d
}

func hasRoute(e *tablev1.Entities, model string) bool {
	return slices.ContainsFunc(e.GetRoutes(), func(r *controlv1.Route) bool { return r.GetModel() == model })
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
