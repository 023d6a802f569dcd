// Package gateway is the edge's request path between the API surfaces and
// the targets: it looks a model up in the routing table, tries its targets
// in order and fails over to the next one when a target fails before its
// first byte.
//
// The routing table is swapped atomically (SetTable); a request reads one
// table from start to end and never sees half of one. The gateway never
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Config configures a Gateway.
type Config struct {
	// Logger receives failover and table events. Nil means slog.Default.
	Logger *slog.Logger
	// Metrics receives attempt counts. Nil disables them.
	Metrics *metrics.Metrics
	// NewProvider builds adapters; nil means provider.New. Tests inject
	// fakes here.
	NewProvider func(table.Provider) (provider.Provider, error)
	// BreakerThreshold is the number of consecutive retryable failures
	// after which a target is skipped while others remain. Zero means 5.
	BreakerThreshold int
	// BreakerCooldown is how long a tripped target is skipped before it
	// is tried again. Zero means 10s.
	BreakerCooldown time.Duration
}

// Gateway routes canonical requests to targets.
type Gateway struct {
	cfg   Config
	log   *slog.Logger
	state atomic.Pointer[state]

	mu sync.Mutex // serialises SetTable
}

type state struct {
	tab       *table.Compiled
	providers map[string]*target
}

type target struct {
	spec table.Provider
	p    provider.Provider
	brk  breaker
	// loaded is p when it reports its own load (provider.Loaded): then
	// the gateway asks it before each attempt and keeps no breaker.
	loaded provider.Loaded
}

// New returns a Gateway with an empty table.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NewProvider == nil {
		cfg.NewProvider = provider.New
	}
	if cfg.BreakerThreshold == 0 {
		cfg.BreakerThreshold = 5
	}
	if cfg.BreakerCooldown == 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	empty, _ := table.Compile(&table.Table{})
	g.state.Store(&state{tab: empty, providers: map[string]*target{}})
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
	g.state.Store(next)
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

// Table returns the table in use.
func (g *Gateway) Table() *table.Compiled { return g.state.Load().tab }

// Close releases every adapter.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, tg := range g.state.Load().providers {
		tg.p.Close()
	}
}

// Route says how a request was served, for the x-meridian-route header
// and for logs.
type Route struct {
	// Target is where the request ran, such as "provider/openai".
	Target string
	// Provider is the provider ID of Target.
	Provider string
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

// Header renders the route for x-meridian-route.
func (r Route) Header() string {
	var b strings.Builder
	if r.Target != "" {
		fmt.Fprintf(&b, "target=%s; model=%s; attempt=%d; reason=%s", r.Target, r.UpstreamModel, r.Attempt, r.Reason)
	} else {
		fmt.Fprintf(&b, "target=none; attempts=%d", r.Attempt)
	}
	if len(r.Failed) > 0 {
		b.WriteString("; failed=")
		b.WriteString(strings.Join(r.Failed, ","))
	}
	return b.String()
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
}

// ErrNoTarget is the cause of the error returned when every target of a
// route was skipped.
var ErrNoTarget = errors.New("no target available")

// Do serves req. It always returns a Result, so the caller can report the
// route even for a failure. Errors are *llm.Error, or ctx's error when the
// client went away.
func (g *Gateway) Do(ctx context.Context, req *llm.Request) (*Result, error) {
	st := g.state.Load()
	res := &Result{}
	route, ok := st.tab.Route(req.Model)
	if !ok {
		return res, &llm.Error{
			Status: http.StatusNotFound, Type: llm.TypeInvalidRequest, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model %q does not exist on this Meridian node.", req.Model),
		}
	}
	if m, ok := st.tab.Model(req.Model); ok {
		if e := checkCapabilities(m, req); e != nil {
			return res, e
		}
	}
	var lastErr error
	now := time.Now()
	for i, tg := range route.Targets {
		t := st.providers[tg.Provider]
		name := "provider/" + tg.Provider
		last := i == len(route.Targets)-1
		selfReporting := t.loaded != nil
		if selfReporting {
			if why := t.loaded.Load().Unavailable(); why != "" && !last {
				res.Route.Failed = append(res.Route.Failed, name+"("+why+")")
				continue
			}
		} else if !last && !t.brk.allow(now) {
			res.Route.Failed = append(res.Route.Failed, name+"(breaker-open)")
			continue
		}
		model := tg.Model
		if model == "" {
			model = req.Model
		}
		res.Route.Attempt++
		start := time.Now()
		resp, err := t.p.Do(ctx, req, model)
		if err == nil && resp.Stream != nil {
			resp.Stream, err = peek(resp.Stream)
		}
		res.Upstream += time.Since(start)
		if err == nil {
			if !selfReporting {
				t.brk.success()
			}
			g.attempt(name, "ok")
			res.Route.Target, res.Route.Provider, res.Route.UpstreamModel = name, tg.Provider, model
			res.Route.Reason = "primary"
			if i > 0 {
				res.Route.Reason = "failover"
			}
			res.Response = resp
			return res, nil
		}
		g.attempt(name, "error")
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		e := llm.AsError(err)
		if !e.Retryable {
			return res, e
		}
		if !selfReporting {
			t.brk.failure(time.Now(), g.cfg.BreakerThreshold, g.cfg.BreakerCooldown)
		}
		res.Route.Failed = append(res.Route.Failed, fmt.Sprintf("%s(%d)", name, e.Status))
		g.log.Warn("target failed, trying the next one", "request_id", req.ID, "model", req.Model, "target", name, "err", e)
		lastErr = e
	}
	if lastErr == nil {
		lastErr = &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded, Message: "no target for this model is available", Retryable: true, Cause: ErrNoTarget}
	}
	return res, lastErr
}

// Plan is what Do would try for a model, in order, and why: the answer
// to "where would this request go?" without sending one.
type Plan struct {
	Model         string       `json:"model"`
	TableRevision uint64       `json:"table_revision"`
	Strategy      string       `json:"strategy"`
	Capabilities  []string     `json:"capabilities,omitempty"`
	Targets       []PlanTarget `json:"targets"`
}

// PlanTarget is one target of a Plan.
type PlanTarget struct {
	Target        string `json:"target"`
	Kind          string `json:"kind"`
	UpstreamModel string `json:"upstream_model"`
	// Skipped says why Do would pass this target by, such as
	// "breaker-open until 2026-01-02T15:04:05Z" or "queue-full"; empty
	// when it would try it.
	Skipped string `json:"skipped,omitempty"`
	// Load is the state of a target that reports its own, such as the
	// local engine.
	Load *provider.Load `json:"load,omitempty"`
}

// Plan explains the route Do would take for model now.
func (g *Gateway) Plan(model string) (*Plan, error) {
	st := g.state.Load()
	route, ok := st.tab.Route(model)
	if !ok {
		return nil, &llm.Error{Status: http.StatusNotFound, Type: llm.TypeInvalidRequest, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model %q does not exist on this Meridian node.", model)}
	}
	p := &Plan{Model: model, TableRevision: st.tab.Revision(), Strategy: route.Strategy}
	if p.Strategy == "" {
		p.Strategy = table.StrategyOrdered
	}
	if m, ok := st.tab.Model(model); ok {
		p.Capabilities = m.Capabilities
	}
	now := time.Now()
	for i, tg := range route.Targets {
		t := st.providers[tg.Provider]
		pt := PlanTarget{Target: "provider/" + tg.Provider, Kind: t.spec.Kind, UpstreamModel: tg.Model}
		if pt.UpstreamModel == "" {
			pt.UpstreamModel = model
		}
		last := i == len(route.Targets)-1
		if t.loaded != nil {
			ld := t.loaded.Load()
			pt.Load = &ld
			if !last {
				pt.Skipped = ld.Unavailable()
			}
		} else if !last && !t.brk.allow(now) {
			pt.Skipped = "breaker-open until " + time.Unix(0, t.brk.openUntil.Load()).UTC().Format(time.RFC3339)
		}
		p.Targets = append(p.Targets, pt)
	}
	return p, nil
}

var (
	imageKey = []byte(`"image_url"`)
	toolsKey = []byte(`"tools"`)
)

// checkCapabilities refuses a request that needs what its model lacks:
// images for a text-only model, tools for a model without tool use. Both
// checks start with a byte search, so a model that declares nothing, or a
// request that needs nothing, costs almost nothing.
func checkCapabilities(m *table.Model, req *llm.Request) *llm.Error {
	if len(m.Capabilities) == 0 || req.Op != llm.OpChat {
		return nil
	}
	needVision := !m.Has(table.CapVision) && (req.Body == nil || bytes.Contains(req.Body, imageKey))
	needTools := !m.Has(table.CapTools) && (req.Body == nil || bytes.Contains(req.Body, toolsKey))
	if !needVision && !needTools {
		return nil
	}
	c, err := req.ChatRequest()
	if err != nil {
		return llm.AsError(err)
	}
	if needVision {
		for i := range c.Messages {
			parts, _ := c.Messages[i].Parts()
			for _, p := range parts {
				if p.Type == "image_url" || p.ImageURL != nil {
					return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Param: fmt.Sprintf("messages[%d].content", i),
						Message: fmt.Sprintf("The model %q accepts text only; messages[%d] contains an image.", m.ID, i)}
				}
			}
		}
	}
	if needTools && len(c.Tools) > 0 {
		return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Param: "tools",
			Message: fmt.Sprintf("The model %q does not support tools.", m.ID)}
	}
	return nil
}

func (g *Gateway) attempt(target, outcome string) {
	if g.cfg.Metrics != nil {
		g.cfg.Metrics.Attempts.WithLabelValues(target, outcome).Inc()
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

// breaker skips a target after consecutive failures. It is lock-free: a
// race between two requests can only let one extra attempt through.
type breaker struct {
	fails     atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds
}

func (b *breaker) allow(now time.Time) bool {
	return now.UnixNano() >= b.openUntil.Load()
}

func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}

func (b *breaker) failure(now time.Time, threshold int, cooldown time.Duration) {
	if int(b.fails.Add(1)) >= threshold {
		b.openUntil.Store(now.Add(cooldown).UnixNano())
		b.fails.Store(0)
	}
}
