// Package router turns everything an edge knows into an ordered plan for
// one request: which targets to try, in what order, and why every other
// one was left out.
//
// Its inputs are the compiled routing table (routes, providers, prices,
// models, placements, nodes and regions), the membership view from
// gossip (SetMembers), link health and the local engine (Links, Local,
// read on every decision), its own per-target health (breakers, time to
// first token, requests in flight) and the request's context (client
// location, tenant, what the request needs).
//
// A plan is built in two steps. Constraints come first and are never
// broken: allowed regions (data residency, from the route, the model and
// the tenant), the price cap, required capabilities and context length,
// then health (dead, draining, unplaced or unreachable peers, open
// breakers). The route's strategy then orders what is left. The gateway
// executes plans; the dry run (GET /v1/meridian/route) prints the same
// plan, so the explanation can never drift from what runs.
//
// This package must never do I/O and never block: Choose runs on every
// request, reads one immutable view through an atomic pointer and
// allocates nothing.
package router

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/geo"
	"github.com/meridian-mesh/meridian/shared/cow"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Kind is what a target is.
type Kind uint8

// Target kinds.
const (
	// KindLocal is this node's own engine.
	KindLocal Kind = iota + 1
	// KindPeer is another edge, reached over a QUIC link.
	KindPeer
	// KindProvider is an upstream provider from the route.
	KindProvider
)

func (k Kind) String() string {
	switch k {
	case KindLocal:
		return "local"
	case KindPeer:
		return "peer"
	case KindProvider:
		return "provider"
	}
	return "unknown"
}

// MarshalText makes kinds read as words in JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Point is a place on Earth, degrees.
type Point = geo.Point

// Member is a peer edge as gossip sees it.
type Member struct {
	ID     string
	Region string
	// Addr is the peer's QUIC link address, host:port.
	Addr string
	// Alive is false once gossip marks the peer dead or left.
	Alive bool
	// Suspect is set while another edge's link has declared the peer
	// dead and neither the peer has refuted it nor the suspicion timed
	// out: this edge stops sending before its own link notices.
	Suspect  bool
	Draining bool
	// Ready are the model IDs the peer's engine has loaded and serves.
	Ready []string
	// InFlight and Queued are the peer's last gossiped load.
	InFlight, Queued int
	// RTT is the smoothed gossip probe round trip; zero if unknown.
	RTT time.Duration
}

// Links reports link health. Implementations must not block.
type Links interface {
	// Down reports a link to the node that failed and has not come
	// back; requests must not wait on it.
	Down(node string) bool
}

// Local is this node's engine. Implementations must not block.
type Local interface {
	// Ready reports whether the engine serves the named model (its
	// engine name) now.
	Ready(engineName string) bool
	// Busy is the engine's requests in flight plus queued.
	Busy() int
}

// Config configures a Router.
type Config struct {
	// Node is this node's ID; Region the region it runs in.
	Node, Region string
	// Links reports peer link health; nil means this node runs no links,
	// so peers are never candidates.
	Links Links
	// Local is the node's engine; nil means it runs none.
	Local Local
	// BreakerThreshold is the consecutive retryable failures that open a
	// target's breaker. Default 5.
	BreakerThreshold int
	// BreakerCooldown is how long an open breaker keeps its target out
	// of plans before one probe request may try it (half-open). Default
	// 10s.
	BreakerCooldown time.Duration
	// FastestPrior is the time to first token assumed for a target never
	// tried, for the fastest strategy. Default 400ms.
	FastestPrior time.Duration
	// OutputTokens is the output assumed for a request that sets no
	// max_tokens, for the cheapest strategy. Default 256.
	OutputTokens int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{BreakerThreshold: 5, BreakerCooldown: 10 * time.Second, FastestPrior: 400 * time.Millisecond, OutputTokens: 256}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.BreakerThreshold <= 0 {
		c.BreakerThreshold = d.BreakerThreshold
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = d.BreakerCooldown
	}
	if c.FastestPrior <= 0 {
		c.FastestPrior = d.FastestPrior
	}
	if c.OutputTokens <= 0 {
		c.OutputTokens = d.OutputTokens
	}
}

// Router builds plans. It is safe for concurrent use.
type Router struct {
	cfg  Config
	view atomic.Pointer[view]

	mu      sync.Mutex // serialises rebuilds; guards the fields below
	tab     *table.Compiled
	members []Member
	stats   map[string]*Stats // by target key; never shrinks while keys exist
}

// New returns a router with an empty table.
func New(cfg Config) *Router {
	cfg.fill()
	r := &Router{cfg: cfg, stats: map[string]*Stats{}}
	empty, _ := table.Compile(&table.Table{})
	r.tab = empty
	r.rebuild()
	return r
}

// Config returns the router's config.
func (r *Router) Config() Config { return r.cfg }

// SetTable makes tab the table every new plan reads.
func (r *Router) SetTable(tab *table.Compiled) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tab = tab
	r.rebuild()
}

// SetMembers replaces the membership view. The node calls it when gossip
// changes; members are copied.
//
// A change of load alone (in flight, queued, RTT: what gossip brings
// every round) updates the members that changed and nothing else: O(N)
// comparisons and O(changed) updates, where a change of who is a member,
// where, alive, draining or ready with what rebuilds every model's
// candidates, O(N + models × candidates). The load a view's candidates
// read is therefore live, like their Stats; which members a view holds,
// and everything else about them, is fixed when it is built.
func (r *Router) SetMembers(ms []Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.view.Load(); v != nil && sameShape(r.members, ms) {
		for i := range ms {
			if sameLoad(&r.members[i], &ms[i]) {
				continue
			}
			r.members[i] = ms[i]
			if cell := v.members[ms[i].ID]; cell != nil {
				m := ms[i]
				cell.m.Store(&m)
			}
		}
		return
	}
	r.members = slices.Clone(ms)
	r.rebuild()
}

// sameShape reports whether a and b list the same members in the same
// order with the same everything but load.
func sameShape(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool {
		return x.ID == y.ID && x.Region == y.Region && x.Addr == y.Addr && x.Alive == y.Alive &&
			x.Suspect == y.Suspect && x.Draining == y.Draining && slices.Equal(x.Ready, y.Ready)
	})
}

func sameLoad(a, b *Member) bool {
	return a.InFlight == b.InFlight && a.Queued == b.Queued && a.RTT == b.RTT
}

// memberCell holds one member of a view. Its value is replaced whole
// when only the member's load changes (SetMembers); a *Member read from
// it is never modified.
type memberCell struct{ m atomic.Pointer[Member] }

// get returns the member; nil for a nil cell.
func (c *memberCell) get() *Member {
	if c == nil {
		return nil
	}
	return c.m.Load()
}

// Table returns the table plans are built from.
func (r *Router) Table() *table.Compiled { return r.view.Load().tab }

// View is one immutable snapshot of what plans read: the table and the
// membership. A caller that decides several things about one request
// (authentication, the plan, its revision header) takes one View and
// uses it for all of them (ChooseIn), so no request straddles two
// tables.
type View struct{ v *view }

// Snapshot returns the view in force now.
func (r *Router) Snapshot() View { return View{r.view.Load()} }

// Table returns the table v was built from.
func (v View) Table() *table.Compiled { return v.v.tab }

// Stats returns a target's health record, by key ("local",
// "peer/NODE", "provider/ID"), creating it if needed.
func (r *Router) Stats(key string) *Stats {
	if s := r.view.Load().stats[key]; s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statsLocked(key)
}

func (r *Router) statsLocked(key string) *Stats {
	s := r.stats[key]
	if s == nil {
		s = &Stats{}
		r.stats[key] = s
	}
	return s
}

// view is one immutable snapshot of everything plans read, but for the
// live health read through Links, Local and Stats.
type view struct {
	tab     *table.Compiled
	models  cow.Map[string, *modelView] // copy-on-write: PatchTable rebuilds only the changed models
	members map[string]*memberCell
	// readyOn lists, per model, the members whose engines have it.
	// Readiness is part of a view's shape (a change of it rebuilds the
	// view), so the index holds for the view's life; a cell's load is
	// read live.
	readyOn map[string][]*memberCell
	stats   map[string]*Stats
	self    Point
	hasSelf bool
	// statsShared is set while a view being patched shares stats with
	// the view before it; buildModel copies it before adding a key.
	statsShared bool
}

// ready returns the members whose engines have model, with their load
// as of now.
func (v *view) ready(model string) []*Member {
	cells := v.readyOn[model]
	if len(cells) == 0 {
		return nil
	}
	out := make([]*Member, len(cells))
	for i, c := range cells {
		out[i] = c.get()
	}
	return out
}

// modelView is one model's candidates, precomputed.
type modelView struct {
	model *table.Model
	route *table.Route
	cands []cand
	// caps is set when any candidate's model declares capabilities, so
	// a request's needs must be worked out.
	caps bool
}

// cand is one candidate target of a model.
type cand struct {
	kind     Kind
	id       string // provider or node ID; "" for local
	key      string // "local", "peer/NODE", "provider/ID"
	upstream string // model name sent to the target
	region   string
	point    Point
	hasPoint bool
	weight   int
	written  int // position in the route; placed copies come after
	// price per 1M tokens; hasPrice false when unknown.
	in, out  float64
	hasPrice bool
	model    *table.Model // the model the target runs, for capabilities
	engine   string       // local: the engine's name for the model
	member   *memberCell  // peer: gossip's view, nil when gossip has none
	addr     string       // peer: link address
	placed   bool         // the table places the model on it (or the route names it); otherwise a leaving copy
	static   bool         // peer: written in the route as a provider
	stats    *Stats
}

// rebuild recomputes the view; r.mu is held.
func (r *Router) rebuild() {
	v := &view{tab: r.tab, members: make(map[string]*memberCell, len(r.members)), stats: map[string]*Stats{}}
	// The view's members are a copy of r.members, which SetMembers
	// updates in place.
	ms, cells := slices.Clone(r.members), make([]memberCell, len(r.members))
	for i := range ms {
		if ms[i].ID != r.cfg.Node {
			cells[i].m.Store(&ms[i])
			v.members[ms[i].ID] = &cells[i]
		}
	}
	if reg, ok := r.tab.Region(r.cfg.Region); ok {
		v.self, v.hasSelf = Point{Lat: reg.Latitude, Lon: reg.Longitude}, true
	}
	// readyOn[model] lists the members whose engines have it.
	v.readyOn = map[string][]*memberCell{}
	for _, cell := range v.members {
		for _, id := range cell.get().Ready {
			v.readyOn[id] = append(v.readyOn[id], cell)
		}
	}
	tab := r.tab
	models := make(map[string]*modelView, len(tab.Table().Models))
	for i := range tab.Table().Models {
		m := &tab.Table().Models[i]
		if mv := r.buildModel(v, m, v.ready(m.ID)); mv != nil {
			models[m.ID] = mv
		}
	}
	v.models = cow.From(models)
	r.view.Store(v)
}

// PatchTable installs tab, which differs from the table in use only in
// the routes of the given models (table.Change.Routes), rebuilding only
// those models' candidates: O(changed models × their candidates), against
// SetTable's O(models × members). It used to find a model's ready
// members by reading every member, O(N) per changed model on every edge
// for every route change; the view now indexes them (readyOn).
func (r *Router) PatchTable(tab *table.Compiled, models []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.view.Load()
	if old == nil || old.tab == nil {
		r.tab = tab
		r.rebuild()
		return
	}
	r.tab = tab
	v := *old
	v.tab = tab
	v.statsShared = true // cloned on the first new key only
	set := make(map[string]*modelView, len(models))
	var del []string
	for _, id := range models {
		m, ok := tab.Model(id)
		if !ok {
			del = append(del, id)
			continue
		}
		if mv := r.buildModel(&v, m, v.ready(id)); mv != nil {
			set[id] = mv
		} else {
			del = append(del, id)
		}
	}
	v.models = old.models.With(set, del)
	v.statsShared = false
	r.view.Store(&v)
}

// buildModel computes one model's candidates in v, registering their
// stats in v.stats; nil when the model has no route. ready lists the
// members whose engines have the model. r.mu is held.
func (r *Router) buildModel(v *view, m *table.Model, ready []*Member) *modelView {
	tab := v.tab
	route, ok := tab.Route(m.ID)
	if !ok {
		return nil
	}
	mv := &modelView{model: m, route: route}
	add := func(c cand) {
		c.stats = r.statsLocked(c.key)
		if v.stats[c.key] != c.stats {
			if v.statsShared {
				v.stats, v.statsShared = maps.Clone(v.stats), false
			}
			v.stats[c.key] = c.stats
		}
		if c.model == nil {
			c.model = m
		}
		if len(c.model.Capabilities) > 0 {
			mv.caps = true
		}
		mv.cands = append(mv.cands, c)
	}
	for j, tg := range route.Targets {
		p, _ := tab.Provider(tg.Provider)
		up := tg.Model
		if up == "" {
			up = m.ID
		}
		c := cand{kind: KindProvider, id: p.ID, key: "provider/" + p.ID, upstream: up, region: p.Region, weight: max(tg.Weight, 1), written: j}
		if tm, ok := tab.Model(up); ok {
			c.model = tm
		}
		switch p.Kind {
		case table.KindLocal:
			c.kind, c.id, c.key, c.region, c.engine, c.placed = KindLocal, "", "local", r.cfg.Region, up, true
		case table.KindPeer:
			node, addr, _ := table.ParsePeerURL(p.BaseURL)
			if node == r.cfg.Node {
				continue // this node itself: never a peer of its own
			}
			c.kind, c.id, c.key, c.addr, c.static, c.placed = KindPeer, node, "peer/"+node, addr, true, true
			c.member = v.members[node]
			if n, ok := tab.Node(node); ok {
				c.region = n.Region
			} else if m := c.member.get(); m != nil {
				c.region = m.Region
			}
		}
		if pr, ok := tab.PriceFor(tg.Provider, m.ID, up); ok {
			c.in, c.out, c.hasPrice = pr.Input, pr.Output, true
		} else if c.kind != KindProvider {
			c.hasPrice = true // the fleet's own hardware: free unless priced
		}
		if c.kind != KindProvider && slices.ContainsFunc(mv.cands, func(o cand) bool { return o.key == c.key }) {
			continue // the same engine or peer written twice: the first counts
		}
		r.locate(tab, &c)
		add(c)
	}
	// The fleet's placed copies: this node, then peers.
	placed := tab.PlacedOn(m.ID)
	n := len(route.Targets)
	if m.Local != nil {
		// This node's engine even where the model is not placed: it
		// may still serve a copy it is leaving (make before break).
		here := slices.Contains(placed, r.cfg.Node)
		if (here || r.cfg.Local != nil) && !slices.ContainsFunc(mv.cands, func(c cand) bool { return c.kind == KindLocal }) {
			c := cand{kind: KindLocal, key: "local", upstream: m.EngineName(), engine: m.EngineName(), region: r.cfg.Region, weight: 1, written: n, placed: here}
			c.in, c.out, c.hasPrice = localPrice(tab, m.ID)
			r.locate(tab, &c)
			add(c)
		}
		// Peers: every node the model is placed on, and every member
		// that says it has it ready (placed or not, so the dry run
		// can say why one is left out).
		seen := map[string]bool{r.cfg.Node: true}
		for _, c := range mv.cands {
			if c.kind == KindPeer {
				seen[c.id] = true
			}
		}
		peer := func(node string) {
			if seen[node] {
				return
			}
			seen[node] = true
			c := cand{kind: KindPeer, id: node, key: "peer/" + node, upstream: m.ID, weight: 1, written: n + 1, placed: slices.Contains(placed, node)}
			c.member = v.members[node]
			if nd, ok := tab.Node(node); ok {
				c.region = nd.Region
			} else if m := c.member.get(); m != nil {
				c.region = m.Region
			}
			if m := c.member.get(); m != nil {
				c.addr = m.Addr
			}
			c.in, c.out, c.hasPrice = localPrice(tab, m.ID)
			r.locate(tab, &c)
			add(c)
		}
		for _, node := range placed {
			peer(node)
		}
		for _, mb := range ready {
			peer(mb.ID)
		}
	}
	return mv
}

// locate fills a candidate's coordinates from its region.
func (r *Router) locate(tab *table.Compiled, c *cand) {
	if reg, ok := tab.Region(c.region); ok {
		c.point, c.hasPoint = Point{Lat: reg.Latitude, Lon: reg.Longitude}, true
	}
}

// localPrice is what running a model on the fleet's own nodes costs: the
// table's price for provider "local", else nothing.
func localPrice(tab *table.Compiled, model string) (in, out float64, ok bool) {
	if p, found := tab.Price(table.KindLocal, model); found {
		return p.Input, p.Output, true
	}
	return 0, 0, true
}
