package meshtest

import (
	"fmt"
	"slices"
	"testing"
)

// testNearest: clients located in three regions, whichever edge they
// reach, land on the provider in their own region under the nearest
// strategy; a client with no location stands where its edge is; and the
// dry run lists the candidates nearest first, with their distances.
func testNearest(t *testing.T, m *mesh) {
	home := map[string]string{"eu-west": "mock-eu-west", "us-east": "mock-us-east", "ap-south": "mock-ap-south"}
	for _, s := range sites {
		for _, e := range m.edges {
			want := m.upstreams[home[s.region]]
			before := want.requests.Load()
			a := m.chat(t, e, "nearby", keyOpen, s.location(), "")
			if a.status != 200 {
				t.Fatalf("client in %s at %s: %d %s", s.region, e.id, a.status, a.body)
			}
			if got := routeField(a.route, "target"); got != "provider/"+want.id || routeField(a.route, "strategy") != "nearest" {
				t.Errorf("client in %s at %s: route %q, want target=provider/%s; strategy=nearest", s.region, e.id, a.route, want.id)
			}
			if n := want.requests.Load() - before; n != 1 {
				t.Errorf("client in %s at %s: %s received %d requests, want 1", s.region, e.id, want.id, n)
			}
		}
	}

	// No location header: the client stands in the edge's region.
	for _, e := range m.edges {
		a := m.chat(t, e, "nearby", keyOpen, "", "")
		if got := routeField(a.route, "target"); a.status != 200 || got != "provider/"+home[e.region] {
			t.Errorf("client without a location at %s: %d route %q, want provider/%s", e.id, a.status, a.route, home[e.region])
		}
	}

	// The dry run, from an edge in none of the clients' regions but one.
	order := map[string][]string{
		"eu-west":  {"provider/mock-eu-west", "provider/mock-us-east", "provider/mock-ap-south"},
		"us-east":  {"provider/mock-us-east", "provider/mock-eu-west", "provider/mock-ap-south"},
		"ap-south": {"provider/mock-ap-south", "provider/mock-eu-west", "provider/mock-us-east"},
	}
	for _, s := range sites {
		x := m.explain(t, m.b, fmt.Sprintf("nearby&lat=%g&lon=%g", s.lat, s.lon))
		if x.Strategy != "nearest" || !slices.Equal(x.targets(), order[s.region]) {
			t.Errorf("dry run for a client in %s: strategy %q targets %v, want nearest %v", s.region, x.Strategy, x.targets(), order[s.region])
			continue
		}
		if x.Targets[0].Score > 1 {
			t.Errorf("dry run for a client in %s: the provider in its region is %.0f km away", s.region, x.Targets[0].Score)
		}
		for i := 1; i < len(x.Targets); i++ {
			if x.Targets[i].Score <= x.Targets[i-1].Score || x.Targets[i].Score < 1000 {
				t.Errorf("dry run for a client in %s: scores %v are not distances in increasing order", s.region, x.Targets)
			}
		}
	}
}
