// Package gateway is the edge's request path between the API surfaces and
// the targets: it asks edge/router for a plan, tries the plan's targets in
// order and fails over to the next one when a target fails before its
// first byte. It owns no routing decision: the order, the exclusions and
// the explanation all come from the router, and the dry run (Explain)
// prints the same plan Do executes.
//
// The routing table is swapped atomically (SetTable); a request reads one
// table from start to end and never sees half of one: it takes one
// Snapshot (table, adapters and router view together) when it arrives,
// and its revision header, key check and plan all come from it. The gateway never
// writes to a client: surfaces own the wire format.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Gateway.
type Config struct {
	// Logger receives failover and table events. Nil means slog.Default.
	Logger *slog.Logger
	// Metrics receives attempt counts. Nil disables them.
	Metrics *metrics.Metrics
	// Registerer receives the gateway's own metrics (each target's
	// breaker state); nil registers none.
	Registerer prometheus.Registerer
	// NewProvider builds adapters; nil means provider.New. Tests inject
	// fakes here.
	NewProvider func(table.Provider) (provider.Provider, error)
	// BreakerThreshold is the number of consecutive retryable failures
	// after which a target is skipped while others remain. Zero means 5.
	BreakerThreshold int
	// BreakerCooldown is how long a tripped target is skipped before it
	// is tried again. Zero means 10s.
	BreakerCooldown time.Duration
	// FailoverBudget caps the time one request spends on failed
	// attempts: once spent, no further target is tried. Zero means 30s.
	FailoverBudget time.Duration
	// Router plans requests. Nil means a router for a node of its own:
	// no peers, and the table's kind-local provider as its engine.
	Router *router.Router
	// Local serves the router's local targets: the node's engine. Nil
	// means the table's provider of kind local, if any.
	Local provider.Provider
	// Peer returns a forwarder to a peer node at a link address, for the
	// router's peer targets. Nil means peers are never tried.
	Peer func(node, addr string) (provider.Provider, error)
	// PeerTTFBFloor is the least time an attempt at a peer may wait for
	// its first byte. Past the peer's budget (router.Stats.TTFTBudget:
	// twice its p99-ish time to first token, at least this floor) the
	// attempt is cancelled and the next target tried. Zero means 1s; a
	// peer with no successful attempt yet has no budget but the link's
	// own liveness.
	PeerTTFBFloor time.Duration
	// Tracer, when set, records a span per routing decision and per
	// attempt (trace.go); nil records none and costs nothing.
	Tracer trace.Tracer
}

// Gateway routes canonical requests to targets.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	router *router.Router
	state  atomic.Pointer[state]
	plans  sync.Pool // *router.Plan

	mu sync.Mutex // serialises SetTable

	peerMu sync.Mutex // serialises making peers; reads are lock-free
	peers  sync.Map   // node ID → *peerTarget
}

// peerTarget is a forwarder to one peer, at the address it was made for.
type peerTarget struct {
	addr string
	p    provider.Provider
}

type state struct {
	tab       *table.Compiled
	providers map[string]*target
	// local is the table's provider of kind local, when it has one.
	local provider.Provider
}

type target struct {
	spec table.Provider
	p    provider.Provider
	// loaded is p when it reports its own load (provider.Loaded): then
	// the gateway asks it before each attempt and keeps no breaker.
	loaded provider.Loaded
}

// New returns a Gateway with an empty table. Zero fields of cfg take
// their defaults (DefaultConfig); check cfg with Validate first.
func New(cfg Config) *Gateway {
	cfg.fill()
	g := &Gateway{cfg: cfg, log: cfg.Logger, router: cfg.Router}
	if g.router == nil {
		rc := router.DefaultConfig()
		rc.BreakerThreshold, rc.BreakerCooldown = cfg.BreakerThreshold, cfg.BreakerCooldown
		rc.Local = &tableLocal{g: g}
		g.router = router.New(rc)
	}
	g.plans.New = func() any { return &router.Plan{} }
	empty, _ := table.Compile(&table.Table{})
	g.state.Store(&state{tab: empty, providers: map[string]*target{}})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(breakerCollector{g}); err != nil {
			// Only a second gateway on one registry gets here.
			g.log.Error("gateway: breaker metrics not registered", "err", err)
		}
	}
	return g
}

// SetTable validates t and, if it is valid, makes it the table every new
// request uses. An invalid table is rejected and the current one kept.
// Adapters for providers whose settings did not change are reused, so
// their connection pools stay warm.
func (g *Gateway) SetTable(t *table.Table) error {
	compiled, err := table.Compile(t)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.state.Load()
	next := &state{tab: compiled, providers: make(map[string]*target, len(t.Providers))}
	for _, spec := range t.Providers {
		if spec.Kind == table.KindPeer {
			continue // the router's peer targets, reached through cfg.Peer
		}
		if prev, ok := old.providers[spec.ID]; ok && prev.spec == spec {
			next.providers[spec.ID] = prev
			continue
		}
		p, err := g.cfg.NewProvider(spec)
		if err != nil {
			for id, tg := range next.providers {
				if old.providers[id] != tg {
					tg.p.Close()
				}
			}
			return fmt.Errorf("provider %q: %w", spec.ID, err)
		}
		loaded, _ := p.(provider.Loaded)
		next.providers[spec.ID] = &target{spec: spec, p: p, loaded: loaded}
	}
	for _, spec := range t.Providers {
		if spec.Kind == table.KindLocal {
			next.local = next.providers[spec.ID].p
		}
	}
	g.state.Store(next)
	g.router.SetTable(compiled)
	for id, tg := range old.providers {
		if next.providers[id] != tg {
			tg.p.Close()
		}
	}
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.TableRevision.Set(float64(t.Revision))
	}
	g.log.Info("routing table applied", "revision", t.Revision, "providers", len(t.Providers), "models", len(t.Models))
	return nil
}

// PatchTable installs t, which differs from the table in use only as ch
// says (routes, keys, tenants' budget state: table.Change), doing work
// proportional to the change: the compiled table and the router's view
// are patched, the providers kept. It checks what SetTable checks, and
// keeps the old table when it fails.
func (g *Gateway) PatchTable(t *table.Table, ch table.Change) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.state.Load()
	compiled, patched, err := old.tab.Patch(t, ch)
	if err != nil {
		return err
	}
	if !patched {
		// Not a change Patch handles: install it whole. SetTable takes
		// the lock itself.
		g.mu.Unlock()
		defer g.mu.Lock()
		return g.SetTable(t)
	}
	g.state.Store(&state{tab: compiled, providers: old.providers, local: old.local})
	g.router.PatchTable(compiled, ch.Routes)
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.TableRevision.Set(float64(t.Revision))
	}
	g.log.Debug("routing table patched", "revision", t.Revision, "routes", len(ch.Routes), "keys", len(ch.Keys)+len(ch.DeletedKeys), "tenants", len(ch.Tenants))
	return nil
}

// Table returns the table in use.
func (g *Gateway) Table() *table.Compiled { return g.state.Load().tab }

// Snapshot is the table state one request is served from: the table,
// the adapters built for it and the router's view of it. A request takes
// one (Snapshot, or the one its Client carries) and reads nothing else,
// so its revision header, its authentication and its plan all come from
// one revision even while SetTable swaps in the next.
type Snapshot struct {
	st *state
	v  router.View
}

// Snapshot returns the table state in force now.
func (g *Gateway) Snapshot() Snapshot {
	st, v := g.state.Load(), g.router.Snapshot()
	if v.Table() == st.tab {
		return Snapshot{st, v} // the path every request takes
	}
	// SetTable is between its two stores, or the router view has moved
	// on; under SetTable's lock the two agree.
	g.mu.Lock()
	defer g.mu.Unlock()
	return Snapshot{g.state.Load(), g.router.Snapshot()}
}

// Valid reports whether s was taken (the zero Snapshot was not).
func (s Snapshot) Valid() bool { return s.st != nil }

// Table returns the snapshot's table.
func (s Snapshot) Table() *table.Compiled { return s.st.tab }

// SnapshotFor returns the snapshot the request in ctx is served from:
// the one its Client carries, or a new one, which the Client then keeps
// for the rest of the request.
func (g *Gateway) SnapshotFor(ctx context.Context) Snapshot {
	c := ClientFrom(ctx)
	if c != nil && c.Snapshot.Valid() {
		return c.Snapshot
	}
	s := g.Snapshot()
	if c != nil {
		c.Snapshot = s
	}
	return s
}

// Close releases every adapter.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, tg := range g.state.Load().providers {
		tg.p.Close()
	}
	g.peers.Range(func(k, v any) bool {
		v.(*peerTarget).p.Close()
		g.peers.Delete(k)
		return true
	})
}

// Router returns the gateway's router.
func (g *Gateway) Router() *router.Router { return g.router }

// tableLocal is the router's engine when the node gives none: the
// table's provider of kind local.
type tableLocal struct{ g *Gateway }

func (l *tableLocal) Ready(string) bool {
	p := l.g.state.Load().local
	if p == nil {
		return false
	}
	if ld, ok := p.(provider.Loaded); ok {
		return ld.Load().Up
	}
	return true
}

func (l *tableLocal) Busy() int {
	if ld, ok := l.g.state.Load().local.(provider.Loaded); ok {
		return ld.Load().Running
	}
	return 0
}

// Route says how a request was served, for the x-meridian-route header
// and for logs.
type Route struct {
	// Target is where the request ran: "local", "peer/NODE" or
	// "provider/ID".
	Target string
	// Kind is the target's kind: local, peer or provider.
	Kind string
	// Provider is the provider or peer node ID of Target; empty for
	// local.
	Provider string
	// Strategy is the route's strategy.
	Strategy string
	// UpstreamModel is the model name sent to the target.
	UpstreamModel string
	// Attempt is the 1-based number of the attempt that succeeded, or
	// the number of attempts made when none did.
	Attempt int
	// Reason says why this target: "primary" or "failover".
	Reason string
	// Failed lists earlier targets and why each was left, such as
	// "provider/a(502)" or "provider/b(breaker-open)".
	Failed []string
}

// Header renders the route for x-meridian-route. It runs once per
// request, so it appends into one buffer rather than formatting.
func (r Route) Header() string {
	n := 64 + len(r.Target) + len(r.UpstreamModel) + len(r.Reason) + len(r.Kind) + len(r.Strategy)
	for _, f := range r.Failed {
		n += len(f) + 1
	}
	b := make([]byte, 0, n)
	if r.Target != "" {
		b = append(b, "target="...)
		b = append(b, r.Target...)
		b = append(b, "; model="...)
		b = append(b, r.UpstreamModel...)
		b = append(b, "; attempt="...)
		b = strconv.AppendInt(b, int64(r.Attempt), 10)
		b = append(b, "; reason="...)
		b = append(b, r.Reason...)
		if r.Kind != "" {
			b = append(b, "; kind="...)
			b = append(b, r.Kind...)
			b = append(b, "; strategy="...)
			b = append(b, r.Strategy...)
		}
	} else {
		b = append(b, "target=none; attempts="...)
		b = strconv.AppendInt(b, int64(r.Attempt), 10)
	}
	for i, f := range r.Failed {
		if i == 0 {
			b = append(b, "; failed="...)
		} else {
			b = append(b, ',')
		}
		b = append(b, f...)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Result is a served request.
type Result struct {
	Route Route
	// Response is the target's answer; nil when Do returns an error.
	Response *llm.Response
	// Upstream is the time spent waiting on targets, failed attempts
	// included, so that the rest is Meridian's own overhead. For a stream
	// it runs until the first chunk arrived.
	Upstream time.Duration
	// candidates is the plan's target count, for the routing span.
	candidates int
}

// ErrNoTarget is the cause of the error returned when every target of a
// route was skipped.
var ErrNoTarget = errors.New("no target available")

// Client is what the node knows of a request's client, for the router.
// The node's middleware and the API surfaces put it in the request's
// context (WithClient); a request without one is routed as if its
// client stood in this node's region.
type Client struct {
	// Location is where the client is; HasLocation false when unknown.
	Location    router.Point
	HasLocation bool
	// Tenant is the tenant of the client's key, and Key the key's ID;
	// empty when the client sent no key the table lists. For a request
	// a peer forwarded here they are the ones the peer authenticated.
	Tenant string
	Key    string
	// KeyRegions are the key's allowed regions, which the router applies
	// on top of the tenant's.
	KeyRegions []string
	// Forwarded marks a request a peer routed here: it never hops to
	// another peer.
	Forwarded bool
	// Snapshot is the table state the request is served from, taken
	// once (Gateway.SnapshotFor); zero until then.
	Snapshot Snapshot
}

type clientKey struct{}

// WithClient returns ctx carrying c.
func WithClient(ctx context.Context, c *Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the client in ctx, nil when none.
func ClientFrom(ctx context.Context) *Client {
	c, _ := ctx.Value(clientKey{}).(*Client)
	return c
}

// request is what the router is told of req.
func (g *Gateway) request(ctx context.Context, v router.View, req *llm.Request, r *router.Request) *llm.Error {
	*r = router.Request{Model: req.Model, PromptTokens: len(req.Body) / 4}
	if c := ClientFrom(ctx); c != nil {
		r.Client, r.HasClient, r.Tenant, r.Forwarded = c.Location, c.HasLocation, c.Tenant, c.Forwarded
		r.KeyRegions = c.KeyRegions
	}
	r.AllowedRegions = req.AllowedRegions
	if req.Op != llm.OpChat || !v.NeedsCapabilities(req.Model) {
		return nil
	}
	c, err := req.ChatRequest()
	if err != nil {
		return llm.AsError(err)
	}
	r.Needs = needsOf(c)
	if c.MaxTokens != nil {
		r.MaxTokens = *c.MaxTokens
	}
	return nil
}

// needsOf reads what a decoded chat request needs of its model.
func needsOf(c *llm.ChatRequest) router.Needs {
	var n router.Needs
	if len(c.Tools) > 0 {
		n |= router.NeedTools
	}
	if rf := bytes.TrimSpace(c.ResponseFormat); len(rf) > 0 && !bytes.Equal(rf, []byte("null")) &&
		(bytes.Contains(rf, []byte(`"json_object"`)) || bytes.Contains(rf, []byte(`"json_schema"`))) {
		n |= router.NeedJSON
	}
	for i := range c.Messages {
		parts, _ := c.Messages[i].Parts()
		for _, p := range parts {
			if p.Type == "image_url" || p.ImageURL != nil {
				n |= router.NeedVision
			}
		}
	}
	return n
}

// refusalError is a plan's refusal in the canonical error type.
func refusalError(r *router.Refusal) *llm.Error {
	typ := llm.TypeInvalidRequest
	if r.Status == http.StatusForbidden {
		typ = llm.TypePermission
	}
	return &llm.Error{Status: r.Status, Type: typ, Code: r.Code, Param: r.Param, Message: r.Message}
}

// Do serves req from the request's snapshot (SnapshotFor). It always
// returns a Result, so the caller can report the route even for a
// failure. Errors are *llm.Error, or ctx's error when the client went
// away.
func (g *Gateway) Do(ctx context.Context, req *llm.Request) (*Result, error) {
	return g.DoIn(ctx, g.SnapshotFor(ctx), req)
}

// DoIn is Do from snapshot snap.
func (g *Gateway) DoIn(ctx context.Context, snap Snapshot, req *llm.Request) (*Result, error) {
	if g.cfg.Tracer != nil {
		return g.doTraced(ctx, snap, req)
	}
	return g.doIn(ctx, snap, req)
}

func (g *Gateway) doIn(ctx context.Context, snap Snapshot, req *llm.Request) (*Result, error) {
	st := snap.st
	res := &Result{}
	var rreq router.Request
	if e := g.request(ctx, snap.v, req, &rreq); e != nil {
		return res, e
	}
	p := g.plans.Get().(*router.Plan)
	defer g.plans.Put(p)
	g.router.ChooseIn(snap.v, &rreq, p)
	res.Route.Strategy, res.candidates = p.Strategy, len(p.Targets)
	if p.Refusal != nil {
		g.refused(p.Refusal)
		return res, refusalError(p.Refusal)
	}
	for i := range p.Excluded {
		// Health exclusions explain why a better target was passed by.
		if ex := &p.Excluded[i]; ex.Reason == router.ReasonBreaker || ex.Reason == router.ReasonLinkDown {
			res.Route.Failed = append(res.Route.Failed, ex.Key+"("+ex.Reason+")")
		}
	}
	rc := g.router.Config()
	var lastErr error
	var failing time.Duration
	for i := range p.Targets {
		ch := &p.Targets[i]
		last := i == len(p.Targets)-1
		if failing >= g.cfg.FailoverBudget {
			res.Route.Failed = append(res.Route.Failed, ch.Key+"(failover-budget)")
			break
		}
		prov, loaded, why := g.target(st, ch)
		if why == "" && loaded != nil && !last {
			why = loaded.Load().Unavailable()
		}
		if why != "" {
			res.Route.Failed = append(res.Route.Failed, ch.Key+"("+why+")")
			continue
		}
		stats := ch.Stats()
		if !stats.Begin(time.Now(), ch.Force || last) {
			res.Route.Failed = append(res.Route.Failed, ch.Key+"(breaker-probing)")
			continue
		}
		if ch.Kind == router.KindPeer && req.AllowedRegions == nil {
			// The peer serves under this plan's residency policy.
			req.AllowedRegions = p.Allowed()
		}
		res.Route.Attempt++
		start := time.Now()
		actx, budget := ctx, time.Duration(0)
		var timer *time.Timer
		var cancel context.CancelFunc
		if ch.Kind == router.KindPeer {
			if budget = stats.TTFTBudget(g.cfg.PeerTTFBFloor); budget > 0 {
				// Never wait blindly on a peer: past its budget the
				// attempt is cancelled (the link resets its stream) and
				// the next target tried.
				actx, cancel = context.WithCancel(ctx)
				timer = time.AfterFunc(budget, cancel)
			}
		}
		var span trace.Span
		if g.cfg.Tracer != nil {
			actx, span = g.startAttempt(actx, st, ch, req)
		}
		resp, err := prov.Do(actx, req, ch.UpstreamModel)
		if err == nil && resp.Stream != nil {
			resp.Stream, err = peek(resp.Stream)
		}
		if timer != nil && !timer.Stop() && ctx.Err() == nil && (err != nil || resp.Stream != nil) {
			if err == nil {
				resp.Stream.Close()
			}
			err = &llm.Error{Status: http.StatusGatewayTimeout, Type: llm.TypeUpstream, Code: "peer_ttfb_timeout",
				Message:   "The Meridian node serving this request did not answer in time.",
				Retryable: true, Cause: fmt.Errorf("%s: no first byte within %v", ch.Key, budget)}
		}
		if err != nil && cancel != nil {
			cancel()
		}
		if span != nil {
			endAttempt(span, ch, resp, err)
		}
		took := time.Since(start)
		res.Upstream += took
		if err == nil {
			stats.End(time.Now(), true, false, took, rc.BreakerThreshold, rc.BreakerCooldown)
			g.attempt(ch.Key, "ok")
			res.Route.Target, res.Route.Kind, res.Route.Provider, res.Route.UpstreamModel = ch.Key, ch.Kind.String(), ch.ID, ch.UpstreamModel
			res.Route.Reason = "primary"
			if i > 0 {
				res.Route.Reason = "failover"
				g.failover()
			}
			g.decided(p.Strategy, ch.Kind)
			res.Response = resp
			return res, nil
		}
		g.attempt(ch.Key, "error")
		e := llm.AsError(err)
		// A target that reports its own load (the local engine) turns
		// requests away when busy; that is no failure of its health.
		counts := e.Retryable && ctx.Err() == nil && loaded == nil
		stats.End(time.Now(), false, counts, 0, rc.BreakerThreshold, rc.BreakerCooldown)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if !e.Retryable {
			return res, e
		}
		failing += took
		res.Route.Failed = append(res.Route.Failed, fmt.Sprintf("%s(%d)", ch.Key, e.Status))
		g.log.Warn("target failed, trying the next one", "request_id", req.ID, "model", req.Model, "target", ch.Key, "err", e)
		lastErr = e
	}
	if lastErr == nil {
		lastErr = &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded, Message: "no target for this model is available", Retryable: true, Cause: ErrNoTarget}
	}
	return res, lastErr
}

// target returns the adapter for a plan's choice, or why there is none.
func (g *Gateway) target(st *state, ch *router.Choice) (provider.Provider, provider.Loaded, string) {
	var p provider.Provider
	switch ch.Kind {
	case router.KindProvider:
		if t := st.providers[ch.ID]; t != nil {
			p = t.p
		}
	case router.KindLocal:
		p = g.cfg.Local
		if p == nil {
			p = st.local
		}
	case router.KindPeer:
		p = g.peer(ch.ID, ch.Addr)
	}
	if p == nil {
		return nil, nil, "unavailable"
	}
	loaded, _ := p.(provider.Loaded)
	return p, loaded, ""
}

// peer returns the forwarder to a peer, making it on first use.
func (g *Gateway) peer(node, addr string) provider.Provider {
	if v, ok := g.peers.Load(node); ok && v.(*peerTarget).addr == addr {
		return v.(*peerTarget).p
	}
	if g.cfg.Peer == nil || addr == "" {
		return nil
	}
	g.peerMu.Lock()
	defer g.peerMu.Unlock()
	if v, ok := g.peers.Load(node); ok && v.(*peerTarget).addr == addr {
		return v.(*peerTarget).p
	}
	p, err := g.cfg.Peer(node, addr)
	if err != nil {
		g.log.Warn("peer target", "node", node, "addr", addr, "err", err)
		return nil
	}
	if old, ok := g.peers.Swap(node, &peerTarget{addr: addr, p: p}); ok {
		old.(*peerTarget).p.Close()
	}
	return p
}

// Explain is the dry run: the plan Do would execute for a request now,
// with every candidate's score and every exclusion's reason. It sends
// nothing.
func (g *Gateway) Explain(r *router.Request) *Explanation {
	snap := g.Snapshot()
	p := &router.Plan{}
	g.router.ChooseIn(snap.v, r, p)
	p.AllowedRegions = p.Allowed()
	if p.Excluded == nil {
		p.Excluded = []router.Choice{} // JSON readers get a list, never null
	}
	ex := &Explanation{Plan: p, Targets: []ExplainedTarget{}}
	st := snap.st
	for i := range p.Targets {
		ch := &p.Targets[i]
		_, loaded, why := g.target(st, ch)
		t := ExplainedTarget{Choice: ch, Skipped: why}
		if loaded != nil {
			ld := loaded.Load()
			t.Load = &ld
			if why == "" && i < len(p.Targets)-1 {
				t.Skipped = ld.Unavailable()
			}
		}
		if ch.Breaker == router.BreakerOpen {
			t.OpenUntil = ch.Stats().OpenUntil().UTC().Format(time.RFC3339)
		}
		ex.Targets = append(ex.Targets, t)
	}
	if p.Refusal != nil {
		ex.Error = refusalError(p.Refusal)
	}
	return ex
}

// Explanation is the dry run's answer.
type Explanation struct {
	*router.Plan
	// Targets shadows the plan's, with what the gateway adds: load of
	// targets that report it and why Do would pass one by.
	Targets []ExplainedTarget `json:"targets"`
	Error   *llm.Error        `json:"-"`
}

// ExplainedTarget is one target of an Explanation.
type ExplainedTarget struct {
	*router.Choice
	// Skipped says why Do would pass this target by, such as
	// "queue-full"; empty when it would try it.
	Skipped   string         `json:"skipped,omitempty"`
	Load      *provider.Load `json:"load,omitempty"`
	OpenUntil string         `json:"breaker_open_until,omitempty"`
}

func (g *Gateway) attempt(target, outcome string) {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.Attempts.WithLabelValues(target, outcome).Inc()
	}
}

func (g *Gateway) decided(strategy string, k router.Kind) {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.Decisions.WithLabelValues(strategy, k.String()).Inc()
	}
}

func (g *Gateway) failover() {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.Failovers.Inc()
	}
}

func (g *Gateway) refused(r *router.Refusal) {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.Refusals.WithLabelValues(r.Code).Inc()
	}
}

// peek reads a stream's first chunk, so that a stream which dies before
// sending anything counts as a failed attempt and the next target can be
// tried: nothing has reached the client yet.
func peek(s llm.Stream) (llm.Stream, error) {
	first, err := s.Next()
	if err == nil {
		return &peeked{Stream: s, first: first}, nil
	}
	s.Close()
	if errors.Is(err, io.EOF) {
		return &peeked{Stream: s, eof: true}, nil
	}
	var e *llm.Error
	if errors.As(err, &e) {
		return nil, e
	}
	if errors.Is(err, llm.ErrStreamCut) {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream stream ended before its first chunk", Retryable: true, Cause: err}
	}
	return nil, err
}

type peeked struct {
	llm.Stream
	first *llm.Chunk
	eof   bool
	used  bool
}

// Buffered implements llm.Buffered.
func (p *peeked) Buffered() int {
	if !p.used {
		return 1
	}
	if b, ok := p.Stream.(llm.Buffered); ok {
		return b.Buffered()
	}
	return 0
}

func (p *peeked) Next() (*llm.Chunk, error) {
	if !p.used {
		p.used = true
		if p.eof {
			return nil, io.EOF
		}
		return p.first, nil
	}
	if p.eof {
		return nil, io.EOF
	}
	return p.Stream.Next()
}

// Plan is Explain for a model alone, with no client location or tenant:
// the plan for a client in this node's region. An unknown model is a 404.
func (g *Gateway) Plan(model string) (*Explanation, error) {
	ex := g.Explain(&router.Request{Model: model})
	if ex.Error != nil && ex.Error.Status == http.StatusNotFound {
		return nil, ex.Error
	}
	return ex, nil
}
