package router

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// fakeLinks and fakeLocal are the live health a test scripts.
type fakeLinks map[string]bool // node → down

func (f fakeLinks) Down(node string) bool { return f[node] }

type fakeLocal struct {
	ready map[string]bool
	busy  int
}

func (f *fakeLocal) Ready(m string) bool { return f.ready[m] }
func (f *fakeLocal) Busy() int           { return f.busy }

// fleet is a three-region table: eu-west (Dublin), us-east (Virginia),
// ap-south (Mumbai); one edge per region; a tiny model placed on the EU
// and Asian edges; providers in the EU and the US.
func fleet() *table.Table {
	return &table.Table{
		Revision: 7,
		Regions: []table.Region{
			{ID: "eu-west", Latitude: 53.35, Longitude: -6.26},
			{ID: "us-east", Latitude: 38.9, Longitude: -77.4},
			{ID: "ap-south", Latitude: 19.07, Longitude: 72.88},
		},
		Nodes: []table.Node{{ID: "edge-eu", Region: "eu-west"}, {ID: "edge-us", Region: "us-east"}, {ID: "edge-ap", Region: "ap-south"}},
		Providers: []table.Provider{
			{ID: "oa-eu", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", Region: "eu-west"},
			{ID: "oa-us", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:2/v1", Region: "us-east"},
			{ID: "cheap", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:3/v1"},
		},
		Models: []table.Model{
			{ID: "tiny", Local: &table.LocalSource{GGUF: "/models/tiny.gguf"}},
			{ID: "gpt", Capabilities: []string{"tools", "json"}, ContextLength: 1000},
			{ID: "gpt-vision", Capabilities: []string{"tools", "json", "vision"}},
		},
		Placements: []table.Placement{{Model: "tiny", Node: "edge-eu"}, {Model: "tiny", Node: "edge-ap"}},
		Routes: []*table.Route{
			{Model: "tiny", Strategy: table.StrategyNearest, Targets: []table.Target{{Provider: "oa-us"}}},
			{Model: "gpt", Targets: []table.Target{{Provider: "oa-us"}, {Provider: "oa-eu"}, {Provider: "cheap", Model: "gpt-vision"}}},
			{Model: "gpt-vision", Targets: []table.Target{{Provider: "cheap"}}},
		},
		Prices: []table.Price{
			{Provider: "oa-us", Model: "gpt", Input: 5, Output: 15},
			{Provider: "oa-eu", Model: "gpt", Input: 6, Output: 18},
			{Provider: "cheap", Model: "gpt-vision", Input: 0.5, Output: 1},
		},
		Tenants: []table.Tenant{{ID: "acme-eu", AllowedRegions: []string{"eu-west"}}},
		Keys:    []*table.Key{{ID: "k", Hash: "sha256:" + strings.Repeat("a", 64), Tenant: "acme-eu"}},
	}
}

type harness struct {
	r     *Router
	links fakeLinks
	local *fakeLocal
	ms    []Member
}

func newHarness(t testing.TB, node, region string, tab *table.Table, edit ...func(*table.Table)) *harness {
	t.Helper()
	for _, f := range edit {
		f(tab)
	}
	c, err := table.Compile(tab)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{links: fakeLinks{}, local: &fakeLocal{ready: map[string]bool{}}}
	cfg := DefaultConfig()
	cfg.Node, cfg.Region, cfg.Links, cfg.Local = node, region, h.links, h.local
	h.r = New(cfg)
	h.r.SetTable(c)
	return h
}

func (h *harness) members(ms ...Member) { h.ms = ms; h.r.SetMembers(ms) }

func alive(id, region string, ready ...string) Member {
	return Member{ID: id, Region: region, Addr: "127.0.0.1:7000", Alive: true, Ready: ready}
}

func (h *harness) plan(req Request) *Plan {
	p := &Plan{}
	h.r.Choose(&req, p)
	return p
}

func keys(cs []Choice) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Key)
	}
	return out
}

func reasons(cs []Choice) map[string]string {
	out := map[string]string{}
	for _, c := range cs {
		out[c.Key] = c.Reason
	}
	return out
}

var (
	dublin = Point{Lat: 53.35, Lon: -6.26}
	nyc    = Point{Lat: 40.71, Lon: -74.0}
	delhi  = Point{Lat: 28.6, Lon: 77.2}
)

func TestNearestLandsOnTheClosestPoP(t *testing.T) {
	// Seen from the US edge, which does not hold the model.
	h := newHarness(t, "edge-us", "us-east", fleet())
	h.members(alive("edge-eu", "eu-west", "tiny"), alive("edge-ap", "ap-south", "tiny"))
	for _, tc := range []struct {
		client Point
		want   []string
	}{
		{dublin, []string{"peer/edge-eu", "provider/oa-us", "peer/edge-ap"}},
		{nyc, []string{"provider/oa-us", "peer/edge-eu", "peer/edge-ap"}},
		{delhi, []string{"peer/edge-ap", "peer/edge-eu", "provider/oa-us"}},
	} {
		p := h.plan(Request{Model: "tiny", Client: tc.client, HasClient: true})
		if got := keys(p.Targets); !slices.Equal(got, tc.want) {
			t.Errorf("client %v: plan %v, want %v", tc.client, got, tc.want)
		}
	}
	// No client location: the edge's own region stands in.
	if got := keys(h.plan(Request{Model: "tiny"}).Targets); got[0] != "provider/oa-us" {
		t.Errorf("no location: %v", got)
	}
}

func TestLocalIsATargetWhenPlacedAndReady(t *testing.T) {
	h := newHarness(t, "edge-eu", "eu-west", fleet())
	p := h.plan(Request{Model: "tiny", Client: dublin, HasClient: true})
	if reasons(p.Excluded)["local"] != ReasonNotReady {
		t.Fatalf("local not ready yet: %v", reasons(p.Excluded))
	}
	h.local.ready["tiny"] = true
	if got := keys(h.plan(Request{Model: "tiny", Client: dublin, HasClient: true}).Targets); got[0] != "local" {
		t.Fatalf("plan %v", got)
	}
	// On the US edge, where it is not placed and the engine does not
	// have it, there is no local candidate.
	h2 := newHarness(t, "edge-us", "us-east", fleet())
	p = h2.plan(Request{Model: "tiny"})
	if slices.Contains(keys(p.Targets), "local") || reasons(p.Excluded)["local"] != "" {
		t.Fatalf("unplaced local in plan: %v %v", keys(p.Targets), reasons(p.Excluded))
	}
}

// TestLeavingCopies: make before break. A node the table no longer
// places a model on, which still has it ready, serves while no placed
// copy is ready, and is left out (not placed) once one is; residency
// still applies to it.
func TestLeavingCopies(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) {
		tb.Nodes = append(tb.Nodes, table.Node{ID: "edge-eu2", Region: "eu-west"})
		// tiny moved from edge-eu2 to edge-ap; edge-eu is down.
		tb.Placements = []table.Placement{{Model: "tiny", Node: "edge-ap"}}
		tb.Routes = slices.DeleteFunc(tb.Routes, func(r *table.Route) bool { return r.Model == "tiny" })
	})
	// The new copy loads: the old one serves.
	h.members(alive("edge-ap", "ap-south"), alive("edge-eu2", "eu-west", "tiny"))
	p := h.plan(Request{Model: "tiny"})
	if got := keys(p.Targets); !slices.Equal(got, []string{"peer/edge-eu2"}) || !p.Targets[0].Leaving {
		t.Fatalf("while the new copy loads: targets %v %+v, excluded %v", got, p.Targets, reasons(p.Excluded))
	}
	if r := reasons(p.Excluded)["peer/edge-ap"]; r != ReasonNotReady {
		t.Errorf("the loading copy: %q", r)
	}
	// Residency holds for a leaving copy too.
	if p := h.plan(Request{Model: "tiny", AllowedRegions: []string{"ap-south"}}); len(p.Targets) != 0 || reasons(p.Excluded)["peer/edge-eu2"] != ReasonResidency {
		t.Errorf("leaving copy outside the allowed regions: targets %v excluded %v", keys(p.Targets), reasons(p.Excluded))
	}
	// The new copy is ready: the old one is left out.
	h.members(alive("edge-ap", "ap-south", "tiny"), alive("edge-eu2", "eu-west", "tiny"))
	p = h.plan(Request{Model: "tiny"})
	if got := keys(p.Targets); !slices.Equal(got, []string{"peer/edge-ap"}) || p.Targets[0].Leaving {
		t.Fatalf("once the new copy is ready: targets %v", got)
	}
	if r := reasons(p.Excluded)["peer/edge-eu2"]; r != ReasonNotPlaced {
		t.Errorf("the old copy once the new one is ready: %q", r)
	}
	// This node's own engine, leaving: it serves its clients until a
	// placed copy is ready, then they go there.
	h.local.ready["tiny"] = true
	h.members(alive("edge-ap", "ap-south"))
	if got := keys(h.plan(Request{Model: "tiny"}).Targets); !slices.Equal(got, []string{"local"}) {
		t.Fatalf("local leaving copy while the new one loads: %v", got)
	}
	h.members(alive("edge-ap", "ap-south", "tiny"))
	p = h.plan(Request{Model: "tiny"})
	if got := keys(p.Targets); !slices.Equal(got, []string{"peer/edge-ap"}) || reasons(p.Excluded)["local"] != ReasonNotPlaced {
		t.Fatalf("local leaving copy once the new one is ready: targets %v excluded %v", got, reasons(p.Excluded))
	}
	// A forwarded request still lands on the leaving copy here: it may
	// not hop on to the ready one.
	p = h.plan(Request{Model: "tiny", Forwarded: true})
	if got := keys(p.Targets); !slices.Equal(got, []string{"local"}) {
		t.Fatalf("forwarded to the leaving copy: targets %v excluded %v", got, reasons(p.Excluded))
	}
}

func TestPeerHealthExclusions(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) {
		tb.Nodes = append(tb.Nodes, table.Node{ID: "edge-eu2", Region: "eu-west"}, table.Node{ID: "edge-rogue", Region: "eu-west"})
		tb.Placements = append(tb.Placements, table.Placement{Model: "tiny", Node: "edge-eu2"})
	})
	dead := alive("edge-ap", "ap-south", "tiny")
	dead.Alive = false
	draining := alive("edge-eu2", "eu-west", "tiny")
	draining.Draining = true
	h.members(alive("edge-eu", "eu-west"), dead, draining)
	got := reasons(h.plan(Request{Model: "tiny"}).Excluded)
	want := map[string]string{"peer/edge-eu": ReasonNotReady, "peer/edge-ap": ReasonDead, "peer/edge-eu2": ReasonDraining}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: reason %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	// A ready peer whose link is down is out at once.
	h.members(alive("edge-eu", "eu-west", "tiny"))
	h.links["edge-eu"] = true
	if r := reasons(h.plan(Request{Model: "tiny"}).Excluded)["peer/edge-eu"]; r != ReasonLinkDown {
		t.Fatalf("link down: %q", r)
	}
	// A placed peer gossip has never heard of is no candidate either.
	h.members()
	if r := reasons(h.plan(Request{Model: "tiny"}).Excluded)["peer/edge-eu"]; r != ReasonUnknown {
		t.Fatalf("unknown peer: %q", r)
	}
	// Without links, no peer is ever a candidate.
	h3 := newHarness(t, "edge-us", "us-east", fleet())
	h3.r.cfg.Links = nil
	h3.members(alive("edge-eu", "eu-west", "tiny"))
	if r := reasons(h3.plan(Request{Model: "tiny"}).Excluded)["peer/edge-eu"]; r != ReasonNoLinks {
		t.Fatalf("no links: %q", r)
	}
}

func TestResidency(t *testing.T) {
	eu := func(tb *table.Table) { tb.Routes[1].AllowedRegions = []string{"eu-west"} }
	h := newHarness(t, "edge-us", "us-east", fleet(), eu)
	p := h.plan(Request{Model: "gpt", Client: nyc, HasClient: true})
	if got := keys(p.Targets); !slices.Equal(got, []string{"provider/oa-eu"}) {
		t.Fatalf("EU-only route: %v", got)
	}
	ex := reasons(p.Excluded)
	if ex["provider/oa-us"] != ReasonResidency || ex["provider/cheap"] != ReasonResidency {
		t.Fatalf("exclusions %v", ex)
	}
	// Every EU target down: a 403, never the US.
	h.r.Stats("provider/oa-eu").openUntil.Store(time.Now().Add(time.Hour).UnixNano())
	p = h.plan(Request{Model: "gpt"})
	if len(p.Targets) != 0 || p.Refusal == nil || p.Refusal.Status != 403 || p.Refusal.Code != "region_not_allowed" || !strings.Contains(p.Refusal.Message, "eu-west") {
		t.Fatalf("plan %v refusal %+v", keys(p.Targets), p.Refusal)
	}
	// The tenant's policy applies to every route.
	h2 := newHarness(t, "edge-us", "us-east", fleet())
	if got := keys(h2.plan(Request{Model: "gpt", Tenant: "acme-eu"}).Targets); !slices.Equal(got, []string{"provider/oa-eu"}) {
		t.Fatalf("tenant: %v", got)
	}
	// The model's too; and lists intersect.
	h3 := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) {
		tb.Models[1].AllowedRegions = []string{"us-east"}
	})
	if p := h3.plan(Request{Model: "gpt", Tenant: "acme-eu"}); p.Refusal == nil || p.Refusal.Status != 403 || len(p.AllowedRegions) != 0 {
		t.Fatalf("disjoint lists: %v %+v", keys(p.Targets), p.Refusal)
	}
}

func TestPriceCapAndCheapest(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) {
		tb.Routes[1].Strategy = table.StrategyCheapest
	})
	if got := keys(h.plan(Request{Model: "gpt", PromptTokens: 1000}).Targets); !slices.Equal(got, []string{"provider/cheap", "provider/oa-us", "provider/oa-eu"}) {
		t.Fatalf("cheapest: %v", got)
	}
	h = newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) { tb.Routes[1].MaxPrice = 21 })
	p := h.plan(Request{Model: "gpt"})
	if got := keys(p.Targets); !slices.Equal(got, []string{"provider/oa-us", "provider/cheap"}) || reasons(p.Excluded)["provider/oa-eu"] != ReasonPrice {
		t.Fatalf("cap: %v %v", got, reasons(p.Excluded))
	}
	h = newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) { tb.Routes[1].MaxPrice = 0.1 })
	if p := h.plan(Request{Model: "gpt"}); p.Refusal == nil || p.Refusal.Code != "price_cap" || p.Refusal.Status != 403 {
		t.Fatalf("nothing under the cap: %+v", p.Refusal)
	}
}

func TestCapabilitiesRouteAround(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	// Only the target that runs gpt-vision takes images.
	p := h.plan(Request{Model: "gpt", Needs: NeedVision | NeedTools})
	if got := keys(p.Targets); !slices.Equal(got, []string{"provider/cheap"}) || reasons(p.Excluded)["provider/oa-us"] != ReasonCapability {
		t.Fatalf("vision: %v %v", got, reasons(p.Excluded))
	}
	h2 := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) { tb.Routes[1].Targets = tb.Routes[1].Targets[:2] })
	if p := h2.plan(Request{Model: "gpt", Needs: NeedVision}); p.Refusal == nil || p.Refusal.Status != 400 || p.Refusal.Code != "capability_not_supported" {
		t.Fatalf("no vision anywhere: %+v", p.Refusal)
	}
	// Context length: gpt holds 1000 tokens, gpt-vision declares none.
	if got := keys(h.plan(Request{Model: "gpt", PromptTokens: 5000}).Targets); !slices.Equal(got, []string{"provider/cheap"}) {
		t.Fatalf("long prompt: %v", got)
	}
	if p := h2.plan(Request{Model: "gpt", PromptTokens: 5000}); p.Refusal == nil || p.Refusal.Code != "context_length_exceeded" {
		t.Fatalf("too long everywhere: %+v", p.Refusal)
	}
}

func TestFastestUsesObservedTTFT(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) { tb.Routes[1].Strategy = table.StrategyFastest })
	now := time.Now()
	for _, x := range []struct {
		key string
		d   time.Duration
	}{{"provider/oa-us", 900 * time.Millisecond}, {"provider/oa-eu", 100 * time.Millisecond}} {
		s := h.r.Stats(x.key)
		s.Begin(now, false)
		s.End(now, true, false, x.d, 5, time.Second)
	}
	// cheap was never tried: the prior (400ms) puts it between.
	if got := keys(h.plan(Request{Model: "gpt"}).Targets); !slices.Equal(got, []string{"provider/oa-eu", "provider/cheap", "provider/oa-us"}) {
		t.Fatalf("fastest: %v", got)
	}
}

func TestLeastBusyAndLocalFirst(t *testing.T) {
	h := newHarness(t, "edge-eu", "eu-west", fleet(), func(tb *table.Table) { tb.Routes[0].Strategy = table.StrategyLeastBusy })
	h.local.ready["tiny"], h.local.busy = true, 9
	busy := alive("edge-ap", "ap-south", "tiny")
	busy.InFlight = 3
	h.members(busy)
	if got := keys(h.plan(Request{Model: "tiny"}).Targets); !slices.Equal(got, []string{"provider/oa-us", "peer/edge-ap", "local"}) {
		t.Fatalf("least-busy: %v", got)
	}
	h = newHarness(t, "edge-eu", "eu-west", fleet(), func(tb *table.Table) { tb.Routes[0].Strategy = table.StrategyLocalFirst })
	h.local.ready["tiny"] = true
	h.members(busy)
	if got := keys(h.plan(Request{Model: "tiny", Client: nyc, HasClient: true}).Targets); !slices.Equal(got, []string{"local", "peer/edge-ap", "provider/oa-us"}) {
		t.Fatalf("local-first: %v", got)
	}
}

func TestOrderedPutsTheFleetAfterTheRoute(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) { tb.Routes[0].Strategy = "" })
	h.members(alive("edge-eu", "eu-west", "tiny"), alive("edge-ap", "ap-south", "tiny"))
	p := h.plan(Request{Model: "tiny", Client: delhi, HasClient: true})
	if got := keys(p.Targets); !slices.Equal(got, []string{"provider/oa-us", "peer/edge-ap", "peer/edge-eu"}) || p.Strategy != "ordered" {
		t.Fatalf("ordered: %v %s", got, p.Strategy)
	}
}

func TestWeightedSharesByWeight(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet(), func(tb *table.Table) {
		tb.Routes[1].Strategy = table.StrategyWeighted
		tb.Routes[1].Targets[0].Weight = 3
		tb.Routes[1].Targets[1].Weight = 1
		tb.Routes[1].Targets = tb.Routes[1].Targets[:2]
	})
	first := map[string]int{}
	for range 4000 {
		p := h.plan(Request{Model: "gpt"})
		if len(p.Targets) != 2 {
			t.Fatalf("plan %v", keys(p.Targets))
		}
		first[p.Targets[0].Key]++
	}
	if us := first["provider/oa-us"]; us < 2700 || us > 3300 {
		t.Fatalf("weight 3:1 gave %v", first)
	}
}

func TestBreakerHalfOpenAdmitsOneProbe(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	h.r.cfg.BreakerCooldown = 50 * time.Millisecond
	s := h.r.Stats("provider/oa-us")
	now := time.Now()
	for range 5 {
		s.Begin(now, false)
		s.End(now, false, true, 0, 5, 50*time.Millisecond)
	}
	if s.State(now) != BreakerOpen || reasons(h.plan(Request{Model: "gpt"}).Excluded)["provider/oa-us"] != ReasonBreaker {
		t.Fatal("breaker did not open after 5 failures")
	}
	later := now.Add(time.Second)
	if s.State(later) != BreakerHalfOpen {
		t.Fatalf("state %s after the cooldown", s.State(later))
	}
	if !s.Begin(later, false) {
		t.Fatal("the first probe was refused")
	}
	if s.Begin(later, false) {
		t.Fatal("a second request got through while the probe runs")
	}
	s.End(later, false, true, 0, 5, 50*time.Millisecond) // the probe failed: open again
	if s.State(later) != BreakerOpen {
		t.Fatalf("state %s after a failed probe", s.State(later))
	}
	evenLater := later.Add(time.Second)
	s.Begin(evenLater, false)
	s.End(evenLater, true, false, time.Millisecond, 5, 50*time.Millisecond)
	if s.State(evenLater) != BreakerClosed || s.Opened() != 2 || s.Probes() != 2 {
		t.Fatalf("state %s opened %d probes %d", s.State(evenLater), s.Opened(), s.Probes())
	}
}

// TestBreakerIgnoresSuccessBegunBeforeItOpened: a slow attempt that
// started while the target still looked healthy and succeeds after its
// breaker opened does not close it; the probe does.
func TestBreakerIgnoresSuccessBegunBeforeItOpened(t *testing.T) {
	s := &Stats{}
	now, cooldown := time.Now(), 200*time.Millisecond
	s.Begin(now, false) // the slow one
	for range 3 {
		s.Begin(now, false)
		s.End(now, false, true, 0, 3, cooldown)
	}
	if s.State(now) != BreakerOpen {
		t.Fatal("breaker did not open")
	}
	at := now.Add(50 * time.Millisecond)
	s.End(at, true, false, 60*time.Millisecond, 3, cooldown) // began 10ms before it opened
	if s.State(at) != BreakerOpen {
		t.Fatalf("state %s after a success begun before the breaker opened", s.State(at))
	}
	later := now.Add(time.Second)
	if !s.Begin(later, false) {
		t.Fatal("the probe was refused")
	}
	s.End(later, true, false, time.Millisecond, 3, cooldown)
	if s.State(later) != BreakerClosed || s.Probes() != 1 {
		t.Fatalf("state %s probes %d after the probe succeeded", s.State(later), s.Probes())
	}
}

func TestEveryBreakerOpenStillTries(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	for _, k := range []string{"provider/oa-us", "provider/oa-eu", "provider/cheap"} {
		h.r.Stats(k).openUntil.Store(time.Now().Add(time.Hour).UnixNano())
	}
	p := h.plan(Request{Model: "gpt"})
	if len(p.Targets) != 3 || !p.Targets[0].Force || p.Refusal != nil {
		t.Fatalf("plan %v %+v", keys(p.Targets), p.Refusal)
	}
	// Tried anyway, they are no longer excluded: a candidate is in one
	// list (found by the property test).
	if len(p.Excluded) != 0 {
		t.Fatalf("forced targets still excluded: %v", reasons(p.Excluded))
	}
}

// Found by the property test: a route may name this node through a peer
// provider, or name the same engine or peer twice.
func TestRouteNamingThisNodeOrATargetTwice(t *testing.T) {
	h := newHarness(t, "edge-eu", "eu-west", fleet(), func(tb *table.Table) {
		tb.Providers = append(tb.Providers,
			table.Provider{ID: "self", Kind: table.KindPeer, BaseURL: "meridian-link://127.0.0.1:7443/edge-eu"},
			table.Provider{ID: "ap-1", Kind: table.KindPeer, BaseURL: "meridian-link://127.0.0.1:7443/edge-ap"},
			table.Provider{ID: "ap-2", Kind: table.KindPeer, BaseURL: "meridian-link://127.0.0.1:7444/edge-ap"},
			table.Provider{ID: "engine-1", Kind: table.KindLocal},
			table.Provider{ID: "engine-2", Kind: table.KindLocal})
		tb.Routes[1].Targets = []table.Target{{Provider: "self"}, {Provider: "ap-1"}, {Provider: "ap-2"}, {Provider: "engine-1"}, {Provider: "engine-2"}}
	})
	h.local.ready["gpt"] = true
	h.members(alive("edge-ap", "ap-south"))
	p := h.plan(Request{Model: "gpt"})
	if got := keys(p.Targets); !slices.Equal(got, []string{"peer/edge-ap", "local"}) || len(p.Excluded) != 0 {
		t.Fatalf("plan %v excluded %v", got, reasons(p.Excluded))
	}
	if p.Targets[0].Addr != "127.0.0.1:7443" {
		t.Fatalf("the first written peer URL should count: %s", p.Targets[0].Addr)
	}
}

func TestForwardedNeverHopsAgainAndKeepsItsPolicy(t *testing.T) {
	h := newHarness(t, "edge-eu", "eu-west", fleet())
	h.local.ready["tiny"] = true
	h.members(alive("edge-ap", "ap-south", "tiny"))
	p := h.plan(Request{Model: "tiny", Forwarded: true, AllowedRegions: []string{"eu-west"}})
	ex := reasons(p.Excluded)
	if got := keys(p.Targets); !slices.Equal(got, []string{"local"}) || ex["peer/edge-ap"] != ReasonForwarded || ex["provider/oa-us"] != ReasonResidency {
		t.Fatalf("forwarded: %v %v", got, ex)
	}
}

func TestUnknownModel(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	if p := h.plan(Request{Model: "nope"}); p.Refusal == nil || p.Refusal.Status != 404 {
		t.Fatalf("%+v", p.Refusal)
	}
}

func TestRegionPlacementIsDeterministic(t *testing.T) {
	tab := fleet()
	for i := range 6 {
		tab.Nodes = append(tab.Nodes, table.Node{ID: fmt.Sprintf("eu-%d", i), Region: "eu-west"})
	}
	tab.Placements = []table.Placement{{Model: "tiny", Region: "eu-west", Desired: 3}}
	a, err := table.Compile(tab)
	if err != nil {
		t.Fatal(err)
	}
	got := a.PlacedOn("tiny")
	if len(got) != 3 {
		t.Fatalf("placed on %v", got)
	}
	// Adding a node elsewhere moves nothing.
	tab2 := fleet()
	tab2.Nodes = append(slices.Clone(tab.Nodes), table.Node{ID: "us-2", Region: "us-east"})
	tab2.Placements = tab.Placements
	b, _ := table.Compile(tab2)
	if !slices.Equal(b.PlacedOn("tiny"), got) {
		t.Fatalf("placement moved: %v → %v", got, b.PlacedOn("tiny"))
	}
}

func TestChooseAllocatesNothing(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	h.members(alive("edge-eu", "eu-west", "tiny"), alive("edge-ap", "ap-south", "tiny"))
	p := &Plan{}
	for _, req := range []Request{
		{Model: "tiny", Client: delhi, HasClient: true},
		{Model: "gpt", Tenant: "acme-eu", PromptTokens: 100},
		{Model: "gpt", Needs: NeedTools},
	} {
		h.r.Choose(&req, p) // grow the plan's slices
		if n := testing.AllocsPerRun(100, func() { h.r.Choose(&req, p) }); n != 0 {
			t.Errorf("%+v: %v allocations per decision", req, n)
		}
	}
}

// TestSuspectPeerIsOut: a peer another edge's link declared dead leaves
// the plan at once, and comes back when the suspicion clears.
func TestSuspectPeerIsOut(t *testing.T) {
	h := newHarness(t, "edge-us", "us-east", fleet())
	sus := alive("edge-eu", "eu-west", "tiny")
	sus.Suspect = true
	h.members(sus)
	if r := reasons(h.plan(Request{Model: "tiny"}).Excluded)["peer/edge-eu"]; r != ReasonSuspect {
		t.Fatalf("suspect peer: reason %q", r)
	}
	h.members(alive("edge-eu", "eu-west", "tiny"))
	if r, ok := reasons(h.plan(Request{Model: "tiny"}).Excluded)["peer/edge-eu"]; ok {
		t.Fatalf("cleared peer still excluded: %q", r)
	}
}
