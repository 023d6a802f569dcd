package router_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
)

// The property test generates whole fleets (table, gossip, links, the
// engine, breakers) and requests, and checks every plan against the
// constraints the router promises, computed here from the inputs alone,
// and against the dry run (gateway.Explain), which must show the same
// plan.

type propLinks map[string]bool // node → down

func (l propLinks) Down(node string) bool { return l[node] }

type propLocal struct {
	ready map[string]bool
	busy  int
}

func (l *propLocal) Ready(name string) bool { return l.ready[name] }
func (l *propLocal) Busy() int              { return l.busy }

// stub is the adapter the gateway builds for every provider; the dry run
// never calls it.
type stub struct{}

func (stub) Do(context.Context, *llm.Request, string) (*llm.Response, error) {
	return nil, fmt.Errorf("stub: never called")
}
func (stub) Close() {}

// fleet is one generated world: what the router was given.
type propFleet struct {
	tab     *table.Table
	self    string
	region  string
	members map[string]router.Member // by ID, self excluded
	links   propLinks                // nil: the node runs no links
	local   *propLocal               // nil: the node runs no engine
}

func subset[V any](t *rapid.T, from []V, label string) []V { return sometimes(t, from, label, 2) }

// sometimes is a subset holding each element with probability 1/n.
func sometimes[V any](t *rapid.T, from []V, label string, n int) []V {
	var out []V
	for i, v := range from {
		if rapid.IntRange(1, n).Draw(t, fmt.Sprintf("%s-%d", label, i)) == 1 {
			out = append(out, v)
		}
	}
	return out
}

// maybeRegions is usually no restriction, sometimes a few regions.
func maybeRegions(t *rapid.T, regions []string, label string) []string {
	if rapid.IntRange(0, 3).Draw(t, label+"-restricted") != 0 {
		return nil
	}
	return subset(t, regions, label)
}

func genTable(t *rapid.T) *table.Table {
	tab := &table.Table{Revision: rapid.Uint64Range(0, 100).Draw(t, "revision")}
	var regions []string
	for i := range rapid.IntRange(1, 6).Draw(t, "regions") {
		id := fmt.Sprintf("r%d", i)
		regions = append(regions, id)
		tab.Regions = append(tab.Regions, table.Region{ID: id,
			Latitude:  rapid.Float64Range(-90, 90).Draw(t, "lat"),
			Longitude: rapid.Float64Range(-180, 180).Draw(t, "lon")})
	}
	var nodes []string
	for i := range rapid.IntRange(1, 12).Draw(t, "nodes") {
		id := fmt.Sprintf("n%d", i)
		nodes = append(nodes, id)
		tab.Nodes = append(tab.Nodes, table.Node{ID: id, Region: rapid.SampledFrom(regions).Draw(t, "node-region")})
	}
	var providers []string
	for i := range rapid.IntRange(1, 6).Draw(t, "providers") {
		p := table.Provider{ID: fmt.Sprintf("p%d", i)}
		switch rapid.IntRange(0, 5).Draw(t, "provider-kind") {
		case 0:
			p.Kind = table.KindLocal
		case 1:
			// A static peer: a table node, sometimes one the table does
			// not know.
			node := rapid.SampledFrom(append(slices.Clone(nodes), "ghost")).Draw(t, "peer-node")
			p.Kind, p.BaseURL = table.KindPeer, fmt.Sprintf("meridian-link://127.0.0.1:%d/%s", 7000+i, node)
		default:
			p.Kind, p.BaseURL = table.KindOpenAI, fmt.Sprintf("http://127.0.0.1:%d/v1", 1+i)
		}
		if rapid.IntRange(0, 3).Draw(t, "provider-has-region") != 0 {
			p.Region = rapid.SampledFrom(regions).Draw(t, "provider-region")
		}
		providers = append(providers, p.ID)
		tab.Providers = append(tab.Providers, p)
	}
	var models []string
	nModels := rapid.IntRange(1, 5).Draw(t, "models")
	for i := range nModels {
		models = append(models, fmt.Sprintf("m%d", i))
	}
	for i, id := range models {
		m := table.Model{ID: id,
			Capabilities:   subset(t, table.Capabilities, "caps"),
			AllowedRegions: maybeRegions(t, regions, "model-allowed")}
		if rapid.IntRange(0, 3).Draw(t, "has-context") == 0 {
			m.ContextLength = rapid.IntRange(1, 4000).Draw(t, "context")
		}
		if rapid.IntRange(0, 2).Draw(t, "local") != 0 {
			m.Local = &table.LocalSource{GGUF: "/models/" + id + ".gguf"}
			if rapid.Bool().Draw(t, "ollama") {
				m.Local.Ollama = fmt.Sprintf("ref-%d:1b", i)
			}
			for range rapid.IntRange(0, 4).Draw(t, "placements") {
				pl := table.Placement{Model: id}
				if rapid.Bool().Draw(t, "by-node") {
					pl.Node = rapid.SampledFrom(nodes).Draw(t, "placement-node")
				} else {
					pl.Region = rapid.SampledFrom(regions).Draw(t, "placement-region")
					pl.Desired = rapid.IntRange(0, 3).Draw(t, "desired")
				}
				tab.Placements = append(tab.Placements, pl)
			}
		}
		tab.Models = append(tab.Models, m)
	}
	for _, id := range models {
		placed := slices.ContainsFunc(tab.Placements, func(p table.Placement) bool { return p.Model == id })
		if placed && rapid.IntRange(0, 3).Draw(t, "no-route") == 0 {
			continue // a placed model needs no route
		}
		rt := table.Route{Model: id,
			Strategy:       rapid.SampledFrom(append([]string{""}, table.Strategies...)).Draw(t, "strategy"),
			AllowedRegions: maybeRegions(t, regions, "route-allowed")}
		if rapid.IntRange(0, 3).Draw(t, "capped") == 0 {
			rt.MaxPrice = rapid.Float64Range(0.1, 40).Draw(t, "max-price")
		}
		perm := rapid.Permutation(providers).Draw(t, "targets")
		n := rapid.IntRange(1, len(perm)).Draw(t, "n-targets")
		if placed {
			n = rapid.IntRange(0, len(perm)).Draw(t, "n-targets-placed")
		}
		for _, p := range perm[:n] {
			tg := table.Target{Provider: p, Weight: rapid.IntRange(0, 3).Draw(t, "weight")}
			switch rapid.IntRange(0, 3).Draw(t, "upstream") {
			case 0:
				tg.Model = rapid.SampledFrom(models).Draw(t, "upstream-model")
			case 1:
				tg.Model = "upstream-" + id
			}
			rt.Targets = append(rt.Targets, tg)
		}
		tab.Routes = append(tab.Routes, &rt)
	}
	for _, p := range append(slices.Clone(providers), table.KindLocal) {
		for _, m := range models {
			for _, up := range []string{m, "upstream-" + m} {
				if rapid.IntRange(0, 2).Draw(t, "priced") == 0 {
					tab.Prices = append(tab.Prices, table.Price{Provider: p, Model: up,
						Input: rapid.Float64Range(0, 20).Draw(t, "in"), Output: rapid.Float64Range(0, 20).Draw(t, "out")})
				}
			}
		}
	}
	for i := range rapid.IntRange(0, 3).Draw(t, "tenants") {
		tn := table.Tenant{ID: fmt.Sprintf("t%d", i), AllowedRegions: maybeRegions(t, regions, "tenant-allowed")}
		tab.Tenants = append(tab.Tenants, tn)
		tab.Keys = append(tab.Keys, &table.Key{ID: "k-" + tn.ID, Hash: fmt.Sprintf("sha256:%064x", i+1), Tenant: tn.ID})
	}
	return tab
}

func genFleet(t *rapid.T) *propFleet {
	tab := genTable(t)
	f := &propFleet{tab: tab, members: map[string]router.Member{}}
	var nodes, regions, names, models []string
	for _, n := range tab.Nodes {
		nodes = append(nodes, n.ID)
	}
	for _, r := range tab.Regions {
		regions = append(regions, r.ID)
	}
	for _, m := range tab.Models {
		names = append(names, m.ID, m.EngineName(), "upstream-"+m.ID)
		models = append(models, m.ID)
	}
	// This node: usually one of the table's, sometimes one it does not
	// know yet.
	f.self = rapid.SampledFrom(append(slices.Clone(nodes), "newcomer")).Draw(t, "self")
	f.region = rapid.SampledFrom(append(slices.Clone(regions), "")).Draw(t, "self-region")
	for _, n := range tab.Nodes {
		if n.ID == f.self {
			f.region = n.Region
		}
	}
	for _, id := range append(slices.Clone(nodes), "ghost", "stranger") {
		if id == f.self || rapid.IntRange(0, 4).Draw(t, "member-absent") == 0 {
			continue
		}
		m := router.Member{ID: id,
			Region:   rapid.SampledFrom(append(slices.Clone(regions), "")).Draw(t, "member-region"),
			Alive:    rapid.IntRange(0, 4).Draw(t, "alive") != 0,
			Draining: rapid.IntRange(0, 4).Draw(t, "draining") == 0,
			Ready:    slices.Concat(subset(t, names, "member-ready"), subset(t, models, "member-ready-model")),
			InFlight: rapid.IntRange(0, 20).Draw(t, "member-inflight"),
			Queued:   rapid.IntRange(0, 20).Draw(t, "member-queued"),
			RTT:      time.Duration(rapid.IntRange(0, 300).Draw(t, "rtt-ms")) * time.Millisecond}
		if rapid.IntRange(0, 5).Draw(t, "member-addr") != 0 {
			m.Addr = "127.0.0.1:7443"
		}
		f.members[id] = m
	}
	if rapid.IntRange(0, 5).Draw(t, "links") != 0 {
		f.links = propLinks{}
		for _, id := range sometimes(t, append(slices.Clone(nodes), "ghost"), "down", 5) {
			f.links[id] = true
		}
	}
	if rapid.IntRange(0, 5).Draw(t, "engine") != 0 {
		f.local = &propLocal{ready: map[string]bool{}, busy: rapid.IntRange(0, 30).Draw(t, "busy")}
		for _, n := range subset(t, names, "local-ready") {
			f.local.ready[n] = true
		}
	}
	return f
}

func genRequest(t *rapid.T, tab *table.Table) router.Request {
	var models, tenants, regions []string
	for _, m := range tab.Models {
		models = append(models, m.ID)
	}
	for _, tn := range tab.Tenants {
		tenants = append(tenants, tn.ID)
	}
	for _, r := range tab.Regions {
		regions = append(regions, r.ID)
	}
	req := router.Request{
		Model:        rapid.SampledFrom(models).Draw(t, "req-model"),
		Tenant:       rapid.SampledFrom(append(tenants, "", "", "nobody")).Draw(t, "req-tenant"),
		Needs:        router.Needs(rapid.IntRange(0, 7).Draw(t, "req-needs")) & router.Needs(rapid.SampledFrom([]int{0, 0, 7}).Draw(t, "req-needs-mask")),
		PromptTokens: rapid.SampledFrom([]int{0, 0, 10, 10, 500, 3000, 9000}).Draw(t, "req-prompt"),
		MaxTokens:    rapid.SampledFrom([]int{0, 100, 2000}).Draw(t, "req-max"),
		Forwarded:    rapid.IntRange(0, 4).Draw(t, "req-forwarded") == 0,
	}
	if rapid.IntRange(0, 9).Draw(t, "req-unknown-model") == 0 {
		req.Model = "unknown"
	}
	if rapid.Bool().Draw(t, "req-client") {
		req.HasClient = true
		req.Client = router.Point{Lat: rapid.Float64Range(-90, 90).Draw(t, "client-lat"), Lon: rapid.Float64Range(-180, 180).Draw(t, "client-lon")}
	}
	req.AllowedRegions = maybeRegions(t, regions, "req-allowed")
	return req
}

func TestChooseProperties(t *testing.T) {
	// seen counts what the generated cases covered, logged at the end so
	// a generator that drifts into trivial cases shows.
	seen := map[string]int{}
	defer func() { t.Logf("covered: %v", seen) }()
	rapid.Check(t, func(rt *rapid.T) {
		seen["fleets"]++
		f := genFleet(rt)
		cfg := router.DefaultConfig()
		cfg.Node, cfg.Region = f.self, f.region
		cfg.BreakerThreshold, cfg.BreakerCooldown = 2, time.Hour
		if f.links != nil {
			cfg.Links = f.links
		}
		if f.local != nil {
			cfg.Local = f.local
		}
		r := router.New(cfg)
		g := gateway.New(gateway.Config{
			Router:      r,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			NewProvider: func(table.Provider) (provider.Provider, error) { return stub{}, nil },
		})
		defer g.Close()
		if err := g.SetTable(f.tab); err != nil {
			seen["skipped"]++
			rt.Skipf("generated table rejected: %v", err)
		}
		tab := g.Table()
		var ms []router.Member
		for _, m := range f.members {
			ms = append(ms, m)
		}
		slices.SortFunc(ms, func(a, b router.Member) int { return strings.Compare(a.ID, b.ID) })
		if rapid.Bool().Draw(rt, "self-in-gossip") {
			ms = append(ms, router.Member{ID: f.self, Region: f.region, Addr: "127.0.0.1:1", Alive: true, Ready: []string{"m0"}})
		}
		r.SetMembers(ms)

		// Breakers and observed latency, through the API the gateway
		// drives: Begin, then End.
		keys := []string{"local"}
		for _, p := range f.tab.Providers {
			keys = append(keys, "provider/"+p.ID)
		}
		for _, n := range append(f.tab.Nodes, table.Node{ID: "ghost"}, table.Node{ID: "stranger"}) {
			keys = append(keys, "peer/"+n.ID)
		}
		now := time.Now()
		for _, k := range sometimes(rt, keys, "breaker-open", 4) {
			s := r.Stats(k)
			for range cfg.BreakerThreshold {
				s.Begin(now, false)
				s.End(now, false, true, 0, cfg.BreakerThreshold, cfg.BreakerCooldown)
			}
		}
		for _, k := range subset(rt, keys, "ttft") {
			s := r.Stats(k)
			s.Begin(now, false)
			s.End(now, true, false, time.Duration(rapid.IntRange(1, 2000).Draw(rt, "ttft-ms"))*time.Millisecond, cfg.BreakerThreshold, cfg.BreakerCooldown)
		}

		reused := &router.Plan{}
		for range rapid.IntRange(1, 6).Draw(rt, "requests") {
			req := genRequest(rt, f.tab)
			r.Choose(&req, reused)
			ex := g.Explain(&req)
			checkPlan(rt, f, tab, cfg, &req, reused)
			seen["plans"]++
			for _, c := range reused.Targets {
				seen["target-"+c.Kind.String()]++
				if c.Force {
					seen["forced"]++
				}
			}
			for _, c := range reused.Excluded {
				seen["excluded-"+c.Reason]++
			}
			if reused.Refusal != nil {
				seen["refused-"+reused.Refusal.Code]++
			}
			samePlan(rt, reused, ex.Plan)
		}
	})
}

// checkPlan asserts every constraint on p, worked out from the inputs.
func checkPlan(t *rapid.T, f *propFleet, tab *table.Compiled, cfg router.Config, req *router.Request, p *router.Plan) {
	m, ok := tab.Model(req.Model)
	if !ok {
		if p.Refusal == nil || p.Refusal.Status != 404 || len(p.Targets)+len(p.Excluded) != 0 {
			t.Fatalf("unknown model %q: plan %v refusal %+v", req.Model, keysOf(p.Targets), p.Refusal)
		}
		return
	}
	route, _ := tab.Route(m.ID)
	placed := tab.PlacedOn(m.ID)

	// The candidates, from the table and gossip alone.
	want := map[string]bool{}
	staticPeers := map[string]string{} // node → the provider's written region
	writtenBy := map[string]string{}   // fleet target key → the first provider naming it
	localProvider := false
	for _, tg := range route.Targets {
		pr, _ := tab.Provider(tg.Provider)
		switch pr.Kind {
		case table.KindLocal:
			want["local"], localProvider = true, true
			if writtenBy["local"] == "" {
				writtenBy["local"] = pr.ID
			}
		case table.KindPeer:
			// A peer URL naming this node is no peer: it is left out.
			if node, _, _ := table.ParsePeerURL(pr.BaseURL); node != f.self {
				if _, dup := staticPeers[node]; !dup {
					staticPeers[node], writtenBy["peer/"+node] = pr.Region, pr.ID
				}
				want["peer/"+node] = true
			}
		default:
			want["provider/"+pr.ID] = true
		}
	}
	if m.Local != nil {
		// The engine here: where the model is placed, or where it is
		// leaving (not placed, still ready).
		if slices.Contains(placed, f.self) || (f.local != nil && f.local.ready[m.EngineName()]) {
			want["local"] = true
		}
		for _, n := range placed {
			if n != f.self {
				want["peer/"+n] = true
			}
		}
		for id, mb := range f.members {
			if slices.Contains(mb.Ready, m.ID) {
				want["peer/"+id] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range slices.Concat(p.Targets, p.Excluded) {
		if seen[c.Key] {
			t.Fatalf("%s appears twice: targets %v excluded %v", c.Key, keysOf(p.Targets), reasonsOf(p.Excluded))
		}
		seen[c.Key] = true
		if !want[c.Key] {
			t.Fatalf("%s is no candidate of %s (want %v)", c.Key, m.ID, want)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Fatalf("candidate %s lost: targets %v excluded %v", k, keysOf(p.Targets), reasonsOf(p.Excluded))
		}
	}

	// Residency: every list that is set.
	lists := [][]string{route.AllowedRegions, m.AllowedRegions, req.AllowedRegions}
	if tn, ok := tab.Tenant(req.Tenant); ok && req.Tenant != "" {
		lists = append(lists, tn.AllowedRegions)
	}
	allowed := func(region string) bool {
		for _, l := range lists {
			if len(l) > 0 && !slices.Contains(l, region) {
				return false
			}
		}
		return true
	}
	restricted := slices.ContainsFunc(lists, func(l []string) bool { return len(l) > 0 })

	// regionOf is where a candidate serves: this node's region for
	// local; for a peer the table's word on where the node runs, else
	// gossip's, else the written provider's; a provider's own.
	regionOf := func(c *router.Choice) string {
		switch c.Kind {
		case router.KindLocal:
			return cfg.Region
		case router.KindPeer:
			if n, ok := tab.Node(c.ID); ok {
				return n.Region
			}
			if mb, ok := f.members[c.ID]; ok {
				return mb.Region
			}
			return staticPeers[c.ID]
		}
		pr, _ := tab.Provider(c.ID)
		return pr.Region
	}
	// underCap is whether a candidate's price is known and within the
	// route's cap, priced by model ID else upstream name
	// (table.Compiled.PriceFor). The fleet's own targets are free unless
	// priced: by the provider that wrote them, else by provider "local".
	underCap := func(c *router.Choice) bool {
		if route.MaxPrice <= 0 {
			return true
		}
		var pr *table.Price
		var ok bool
		switch by := writtenBy[c.Key]; {
		case c.Kind == router.KindProvider:
			pr, ok = tab.PriceFor(c.ID, m.ID, c.UpstreamModel)
		case by != "":
			pr, ok = tab.PriceFor(by, m.ID, c.UpstreamModel)
		default:
			pr, ok = tab.Price(table.KindLocal, m.ID)
		}
		if !ok {
			return c.Kind != router.KindProvider
		}
		return pr.Input+pr.Output <= route.MaxPrice
	}
	now := time.Now()
	// Every exclusion's reason holds: none is a target lost.
	for i := range p.Excluded {
		c := &p.Excluded[i]
		mb, inGossip := f.members[c.ID]
		var holds bool
		switch c.Reason {
		case router.ReasonResidency:
			holds = restricted && !allowed(regionOf(c))
		case router.ReasonPrice:
			holds = !underCap(c)
		case router.ReasonForwarded:
			holds = req.Forwarded && c.Kind == router.KindPeer
		case router.ReasonNoLinks:
			holds = f.links == nil && c.Kind == router.KindPeer
		case router.ReasonLinkDown:
			holds = f.links[c.ID] && c.Kind == router.KindPeer
		case router.ReasonDead:
			holds = inGossip && !mb.Alive
		case router.ReasonDraining:
			holds = inGossip && mb.Draining
		case router.ReasonBreaker:
			holds = c.Stats().State(now) == router.BreakerOpen
		case router.ReasonNotPlaced:
			holds = (c.Kind == router.KindPeer && !slices.Contains(placed, c.ID)) || (c.Kind == router.KindLocal && c.Leaving)
		case router.ReasonNotReady:
			if c.Kind == router.KindLocal {
				holds = f.local == nil || !f.local.ready[c.UpstreamModel]
			} else {
				holds = inGossip && !slices.Contains(mb.Ready, m.ID)
			}
		case router.ReasonUnknown:
			holds = c.Kind == router.KindPeer && (!inGossip || mb.Addr == "")
		case router.ReasonCapability, router.ReasonContext:
			holds = true // checked on targets below, from the other side
		}
		if !holds {
			t.Fatalf("%s excluded for %q, which does not hold", c.Key, c.Reason)
		}
	}

	// Make before break: a leaving copy (ready, no longer placed) is a
	// target only while no placed copy of the fleet is.
	if slices.ContainsFunc(p.Targets, func(c router.Choice) bool { return c.Leaving }) &&
		slices.ContainsFunc(p.Targets, func(c router.Choice) bool { return c.Kind != router.KindProvider && !c.Leaving }) {
		t.Fatalf("leaving copies planned beside placed ones: %v", keysOf(p.Targets))
	}
	for i := range p.Targets {
		c := &p.Targets[i]
		region := regionOf(c)
		if !underCap(c) {
			t.Fatalf("%s above the price cap %v", c.Key, route.MaxPrice)
		}
		switch c.Kind {
		case router.KindLocal:
			if !localProvider && !(m.Local != nil && slices.Contains(placed, f.self)) && !c.Leaving {
				t.Fatalf("local target for %s, neither placed on %s nor in the route, nor leaving", m.ID, f.self)
			}
			if f.local == nil || !f.local.ready[c.UpstreamModel] {
				t.Fatalf("local target for %s whose engine does not have %q ready", m.ID, c.UpstreamModel)
			}
		case router.KindPeer:
			mb, inGossip := f.members[c.ID]
			_, static := staticPeers[c.ID]
			switch {
			case c.ID == f.self:
				t.Fatalf("the router's own node %s is a peer target", f.self)
			case req.Forwarded:
				t.Fatalf("forwarded request planned to hop to %s", c.Key)
			case f.links == nil:
				t.Fatalf("peer %s without links", c.Key)
			case f.links[c.ID]:
				t.Fatalf("peer %s whose link is down", c.Key)
			case c.Addr == "":
				t.Fatalf("peer %s without an address", c.Key)
			case inGossip && !mb.Alive:
				t.Fatalf("dead peer %s", c.Key)
			case inGossip && mb.Draining:
				t.Fatalf("draining peer %s", c.Key)
			case !static && !inGossip:
				t.Fatalf("peer %s not in the membership", c.Key)
			case !static && !slices.Contains(placed, c.ID) && !c.Leaving:
				t.Fatalf("peer %s, where the table does not place %s (placed on %v), not marked leaving", c.Key, m.ID, placed)
			case !static && !slices.Contains(mb.Ready, m.ID):
				t.Fatalf("peer %s does not have %s ready", c.Key, m.ID)
			}
		case router.KindProvider:
			if _, ok := tab.Provider(c.ID); !ok {
				t.Fatalf("unknown provider %s", c.Key)
			}
		}
		if c.Region != region {
			t.Fatalf("%s reports region %q, want %q", c.Key, c.Region, region)
		}
		if restricted && (region == "" || !allowed(region)) {
			t.Fatalf("%s in region %q breaks residency %v", c.Key, region, lists)
		}
		// A target runs its upstream model when the table declares one
		// by that name, else the requested model.
		tm := m
		if um, ok := tab.Model(c.UpstreamModel); ok {
			tm = um
		}
		if len(tm.Capabilities) > 0 {
			for need, cp := range map[router.Needs]string{router.NeedTools: table.CapTools, router.NeedVision: table.CapVision, router.NeedJSON: table.CapJSON} {
				if req.Needs&need != 0 && !tm.Has(cp) {
					t.Fatalf("%s runs %s, which lacks %s", c.Key, tm.ID, cp)
				}
			}
		}
		if req.PromptTokens > 0 && tm.ContextLength > 0 && req.PromptTokens > tm.ContextLength {
			t.Fatalf("%s: prompt of %d tokens over %s's context of %d", c.Key, req.PromptTokens, tm.ID, tm.ContextLength)
		}
	}

	// The strategy's order: scores never go down (a weighted pick's is
	// -Inf, a forced plan's the time its breaker closes).
	for i := 1; i < len(p.Targets); i++ {
		if p.Targets[i].Score < p.Targets[i-1].Score {
			t.Fatalf("%s plan out of order: %s scores %v after %s's %v", p.Strategy, p.Targets[i].Key, p.Targets[i].Score, p.Targets[i-1].Key, p.Targets[i-1].Score)
		}
	}

	byResidency := slices.ContainsFunc(p.Excluded, func(c router.Choice) bool { return c.Reason == router.ReasonResidency })
	if p.Refusal != nil && p.Refusal.Code == "region_not_allowed" {
		if len(p.Targets) != 0 || !byResidency || p.Refusal.Status != 403 {
			t.Fatalf("403 with targets %v, excluded %v", keysOf(p.Targets), reasonsOf(p.Excluded))
		}
	}
	if len(p.Targets) == 0 && byResidency && (p.Refusal == nil || p.Refusal.Code != "region_not_allowed") {
		t.Fatalf("residency left nothing, refusal %+v", p.Refusal)
	}
	if p.Refusal != nil && len(p.Targets) != 0 {
		t.Fatalf("refusal %+v with targets %v", p.Refusal, keysOf(p.Targets))
	}
}

// samePlan asserts that the plan Choose gave and the dry run's agree.
func samePlan(t *rapid.T, got, dry *router.Plan) {
	if got.Model != dry.Model || got.Strategy != dry.Strategy || got.TableRevision != dry.TableRevision {
		t.Fatalf("plan %s/%s/%d, dry run %s/%s/%d", got.Model, got.Strategy, got.TableRevision, dry.Model, dry.Strategy, dry.TableRevision)
	}
	gk, dk := keysOf(got.Targets), keysOf(dry.Targets)
	forced := len(got.Targets) > 0 && got.Targets[0].Force
	if got.Strategy == table.StrategyWeighted && !forced {
		// The first pick is random by weight; the rest follow weights.
		gk, dk = slices.Sorted(slices.Values(gk)), slices.Sorted(slices.Values(dk))
	}
	if !slices.Equal(gk, dk) {
		t.Fatalf("targets %v, dry run %v", gk, dk)
	}
	if !slices.Equal(reasonsOf(got.Excluded), reasonsOf(dry.Excluded)) {
		t.Fatalf("excluded %v, dry run %v", reasonsOf(got.Excluded), reasonsOf(dry.Excluded))
	}
	switch {
	case (got.Refusal == nil) != (dry.Refusal == nil):
		t.Fatalf("refusal %+v, dry run %+v", got.Refusal, dry.Refusal)
	case got.Refusal != nil && *got.Refusal != *dry.Refusal:
		t.Fatalf("refusal %+v, dry run %+v", *got.Refusal, *dry.Refusal)
	}
}

func keysOf(cs []router.Choice) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Key)
	}
	return out
}

func reasonsOf(cs []router.Choice) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Key+"="+c.Reason)
	}
	return out
}
