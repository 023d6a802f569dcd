// Package engine runs an edge's local inference: it supervises a local
// `ollama serve` (or attaches to one that already runs), makes sure the
// models placed on the node exist and stay loaded, and serves requests to
// them as a gateway target of kind "local". The placed models change at
// run time (Place, as the control plane places models on the edge): a
// reconciler creates or pulls and loads new ones and unloads removed
// ones, in the background.
//
// Ollama runs out of process, so a crashing model runner takes nothing
// else down and the edge binary stays cgo-free. The server runs in a
// process group of its own, which is signalled as a whole: Ollama's
// runners never outlive it. A server that dies is restarted with
// backoff; requests caught by the crash fail over (before their first
// byte) or end with an error event (after it).
//
// A bounded admission queue sits in front of Ollama: NumParallel
// requests run, Queue more wait, and the next gets a retryable 429 with
// Retry-After, so the router can send it elsewhere.
//
// This package must never block a request on model management: a model
// that is not loaded yet, or no longer placed, gets a retryable 503 at
// once.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/provider/ollama"
	"github.com/meridian-mesh/meridian/edge/provider/openai"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/ollama/ollama/api"
)

var (
	_ provider.Provider = (*Engine)(nil)
	_ provider.Loaded   = (*Engine)(nil)
)

// ProviderID is the table provider ID the edge gives its local engine
// when the config declares none of kind "local".
const ProviderID = "local"

// Model states, as /readyz reports them.
const (
	StateLoading = "loading"
	StateReady   = "ready"
	StateFailed  = "failed"
)

// ModelStatus is one placed model's state.
type ModelStatus struct {
	State string `json:"state"`
	// Error says why the model failed, when it did.
	Error string `json:"error,omitempty"`
	// Leaving marks a ready model the node is no longer placed to run:
	// it serves on until the handoff ends (see Place).
	Leaving bool `json:"leaving,omitempty"`
}

// Stats is a snapshot of the engine's load, for the router, gossip and
// metrics.
type Stats struct {
	// Up reports an Ollama that answers.
	Up bool
	// Running is the number of admitted requests not yet finished.
	Running int
	// Queued is how many of them wait for one of NumParallel slots.
	Queued int
	// TokensPerSecond is a moving average of generation speed, per
	// request, over recent completions; zero before the first.
	TokensPerSecond float64
	// Restarts counts the times the supervised Ollama was restarted.
	Restarts uint64
}

// Engine is the node's local inference engine.
type Engine struct {
	cfg       Config
	log       *slog.Logger
	ollamaLog *slog.Logger // Ollama's own lines

	conn     atomic.Pointer[conn] // nil while Ollama is down
	running  atomic.Int64
	restarts atomic.Uint64
	tps      atomic.Uint64 // float64 bits of the tokens/s moving average
	pgid     atomic.Int64

	mu       sync.Mutex             // guards the fields below; a leaf lock (place.go)
	models   map[string]ModelStatus // the placed models' states
	want     []Model                // the placed models, in placement order
	retired  map[string]bool        // models placed once and removed since: Do refuses them
	leaving  map[string]leaving     // removed models still serving until their handoff ends
	dirty    bool                   // a state changed since onChange was last called
	onChange func()                 // called by the reconciler after state changes

	wake chan struct{} // wakes the reconciler; capacity 1, see kick

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns an engine for cfg, which must be valid and enabled. It
// starts nothing until Start.
func New(cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled {
		return nil, errors.New("local engine: not enabled")
	}
	if cfg.URL == "" {
		// Resolved now: a missing binary is a configuration error to stop
		// on, not a crash to retry; and the child runs in DataDir, where
		// a relative path would mean something else.
		bin, err := exec.LookPath(cfg.Binary)
		if err == nil {
			bin, err = filepath.Abs(bin)
		}
		if err != nil {
			return nil, &table.FieldError{Field: "local.binary", Msg: fmt.Sprintf("%v (`make ollama` builds bin/ollama)", err)}
		}
		cfg.Binary = bin
	}
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{cfg: cfg, log: log.With("component", "local"), ollamaLog: log.With("component", "ollama"),
		models: map[string]ModelStatus{}, retired: map[string]bool{}, leaving: map[string]leaving{}, wake: make(chan struct{}, 1)}
	e.place(cfg.Models) // validated: skips none
	if cfg.Registerer != nil {
		if err := registerMetrics(cfg.Registerer, e, cfg.modelNames()); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Start starts or attaches to Ollama and the reconciler that prepares
// the placed models, in the background. It returns at once; Ready
// reports progress. Stop ends what Start began.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.reconcile(ctx)
	}()
	go func() {
		defer wg.Done()
		if e.cfg.URL != "" {
			e.attach(ctx)
		} else {
			e.supervise(ctx)
		}
	}()
	go func() {
		wg.Wait()
		close(e.done)
	}()
}

// Stop stops the supervised Ollama, its runners with it, and waits for
// that. An attached Ollama is left running.
func (e *Engine) Stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
}

// supervise keeps one `ollama serve` running until ctx ends, restarting
// it with backoff when it dies. The backoff doubles while starts fail or
// servers die young, and resets after a server ran for a minute.
func (e *Engine) supervise(ctx context.Context) {
	const settled = time.Minute
	policy := backoff.Policy{Base: e.cfg.RestartBackoff, Max: e.cfg.MaxRestartBackoff}
	attempt := 0
	for first := true; ; first = false {
		if !first {
			e.restarts.Add(1)
		}
		started := time.Now()
		p, err := start(ctx, &e.cfg, e.ollamaLog)
		if err == nil {
			e.pgid.Store(int64(p.pgid))
			e.log.Info("local engine: ollama listening", "url", p.url, "pgid", p.pgid)
			e.serve(ctx, p)
			if ctx.Err() != nil {
				p.stop(5 * time.Second)
				e.log.Info("local engine: stopped")
				return
			}
			err = fmt.Errorf("ollama exited: %v", p.err)
			p.stop(0) // reap runners the dead server left
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > settled {
			attempt = 0
		}
		wait := policy.Delay(attempt)
		attempt++
		e.log.Error("local engine: restarting ollama", "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// serve routes requests to the running process p, and has the
// reconciler prepare the placed models on it, until p exits or ctx ends.
func (e *Engine) serve(ctx context.Context, p *process) {
	c, err := e.connect(p.url)
	if err != nil {
		e.log.Error("local engine", "err", err)
		return
	}
	e.conn.Store(c)
	e.kick()
	select {
	case <-p.exited:
	case <-ctx.Done():
	}
	e.conn.Store(nil)
	// A new server must load the models again. The reconciler marks them
	// too, when it notices; doing it here leaves no moment when a new
	// server looks ready with the old one's models.
	e.markLoading()
	e.kick()
	c.close()
}

// attach serves through an Ollama that someone else runs.
func (e *Engine) attach(ctx context.Context) {
	c, err := e.connect(e.cfg.URL)
	if err != nil {
		e.log.Error("local engine", "err", err)
		return
	}
	policy := backoff.Policy{Base: e.cfg.RestartBackoff, Max: e.cfg.MaxRestartBackoff}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		wait := policy.Delay(attempt)
		if err := c.client.Heartbeat(ctx); err == nil {
			// Only now, so that the reconciler does not fail the models
			// on an Ollama still starting.
			e.log.Info("local engine: attached", "url", e.cfg.URL)
			e.conn.Store(c)
			e.kick()
			break
		} else if ctx.Err() == nil {
			e.log.Warn("local engine: ollama not answering yet", "url", e.cfg.URL, "err", err, "retry_in", wait)
		}
		if !sleep(ctx, wait) {
			break
		}
	}
	<-ctx.Done()
	e.conn.Store(nil)
	c.close()
}

// conn is how the engine reaches one running Ollama.
type conn struct {
	base   string
	native *ollama.Adapter // chat and embeddings: /api/chat, /api/embed
	compat *openai.Adapter // legacy completions: Ollama's /v1/completions
	client *api.Client     // model management
}

func (c *conn) close() {
	c.native.Close()
	c.compat.Close()
}

func (e *Engine) connect(base string) (*conn, error) {
	spec := table.Provider{ID: ProviderID, Kind: table.KindOllama, BaseURL: base,
		// Loading a model into memory may take a while on first use.
		FirstByteTimeout: 5 * time.Minute}
	native, err := ollama.NewEngine(spec, ollama.Engine{KeepAlive: e.cfg.KeepAlive, NumThread: e.cfg.NumThread})
	if err != nil {
		return nil, fmt.Errorf("local engine: %w", err)
	}
	spec.Kind, spec.BaseURL = table.KindOpenAI, strings.TrimRight(base, "/")+"/v1"
	compat, err := openai.New(spec)
	if err != nil {
		return nil, fmt.Errorf("local engine: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("local engine: %w", err)
	}
	return &conn{base: base, native: native, compat: compat, client: api.NewClient(u, &http.Client{})}, nil
}

// Models returns every placed model's state.
func (e *Engine) Models() map[string]ModelStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]ModelStatus, len(e.models))
	for k, v := range e.models {
		out[k] = v
	}
	return out
}

// Ready reports whether Ollama answers and no placed model is still
// loading, and lists the models that are not ready. A model that failed
// for good (a corrupt file) is listed but does not hold readiness back:
// the node serves its other models, and routes send that one elsewhere.
func (e *Engine) Ready() (ready bool, notReady []string) {
	ready = e.conn.Load() != nil
	for name, st := range e.Models() {
		if st.State != StateReady {
			notReady = append(notReady, name)
		}
		if st.State == StateLoading {
			ready = false
		}
	}
	sort.Strings(notReady)
	return ready, notReady
}

// Stats returns the engine's current load.
func (e *Engine) Stats() Stats {
	running := int(e.running.Load())
	return Stats{
		Up:              e.conn.Load() != nil,
		Running:         running,
		Queued:          max(0, running-e.cfg.NumParallel),
		TokensPerSecond: math.Float64frombits(e.tps.Load()),
		Restarts:        e.restarts.Load(),
	}
}

// URL returns the base URL of the Ollama in use, "" while it is down.
// Benchmarks use it to call the same Ollama directly.
func (e *Engine) URL() string {
	if c := e.conn.Load(); c != nil {
		return c.base
	}
	return ""
}

// Load implements provider.Loaded: the gateway asks it before each
// attempt, and GET /v1/meridian/route shows it.
func (e *Engine) Load() provider.Load {
	st := e.Stats()
	return provider.Load{Up: st.Up, Running: st.Running, Queued: st.Queued,
		Capacity: e.cfg.NumParallel + e.cfg.Queue, TokensPerSecond: st.TokensPerSecond}
}

// processGroup returns the supervised Ollama's process group, zero when
// none has started. Tests use it to check for orphans.
func (e *Engine) processGroup() int { return int(e.pgid.Load()) }

// Close implements the gateway's provider interface. The engine outlives
// routing table changes, so it does nothing; Stop ends the engine.
func (e *Engine) Close() {}

// Do serves req on the local model upstreamModel (req.Model when empty).
// A full queue gives a retryable 429, a model that is not loaded or an
// Ollama that is down a retryable 503: the router then tries the next
// target.
func (e *Engine) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	model := req.UpstreamModel(upstreamModel)
	c := e.conn.Load()
	if c == nil {
		return nil, &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded, Code: "engine_unavailable",
			Message: "The local engine is starting or restarting.", Retryable: true, RetryAfter: time.Second}
	}
	if st, ok := e.modelState(model); ok && st.State != StateReady {
		msg := "Model '" + model + "' is still loading on this node."
		switch st.State {
		case StateFailed:
			msg = "Model '" + model + "' failed to load on this node."
		case stateRemoved:
			msg = "Model '" + model + "' is no longer placed on this node."
		}
		return nil, &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded, Code: "model_not_loaded",
			Message: msg, Retryable: true, RetryAfter: time.Second}
	}
	if n := e.running.Add(1); n > int64(e.cfg.NumParallel+e.cfg.Queue) {
		e.running.Add(-1)
		return nil, &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "local_queue_full",
			Message: "The local engine's queue is full; retry shortly.", Retryable: true, RetryAfter: time.Second}
	}
	start := time.Now()
	var resp *llm.Response
	var err error
	if req.Op == llm.OpCompletion {
		// Ollama's native API has no legacy completions; its
		// OpenAI-compatible one does, in the client's own format.
		resp, err = c.compat.Do(ctx, req, model)
	} else {
		resp, err = c.native.Do(ctx, req, model)
	}
	if err != nil {
		e.running.Add(-1)
		return nil, err
	}
	if resp.Stream == nil {
		e.running.Add(-1)
		e.observe(resp.Usage.CompletionTokens, time.Since(start))
		return resp, nil
	}
	resp.Stream = &stream{Stream: resp.Stream, e: e}
	return resp, nil
}

// stateRemoved is what Do finds for a model Place removed. Models
// never placed are passed to Ollama as they are: an attached Ollama may
// have models of its own that routes name.
const stateRemoved = "removed"

// ModelReady reports whether the engine serves the named model now. It
// copies nothing, for the router's per-request check.
func (e *Engine) ModelReady(name string) bool {
	if e.conn.Load() == nil {
		return false
	}
	st, ok := e.modelState(name)
	return ok && st.State == StateReady
}

func (e *Engine) modelState(name string) (ModelStatus, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, ok := e.models[name]
	if !ok && e.retired[name] {
		return ModelStatus{State: stateRemoved}, true
	}
	return st, ok
}

// observe folds one generation's speed into the moving average.
func (e *Engine) observe(tokens int, d time.Duration) {
	if tokens < 2 || d <= 0 {
		return
	}
	rate := float64(tokens) / d.Seconds()
	for {
		old := e.tps.Load()
		prev := math.Float64frombits(old)
		next := rate
		if prev > 0 {
			next = prev + 0.2*(rate-prev)
		}
		if e.tps.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// stream releases the request's queue slot when the stream closes and
// measures generation speed from the first chunk on.
type stream struct {
	llm.Stream
	e      *Engine
	first  time.Time
	closed bool
}

func (s *stream) Next() (*llm.Chunk, error) {
	c, err := s.Stream.Next()
	if err == nil && s.first.IsZero() {
		s.first = time.Now()
	}
	return c, err
}

// Buffered passes the adapter's answer on, so the relay keeps coalescing
// bursts.
func (s *stream) Buffered() int {
	if b, ok := s.Stream.(llm.Buffered); ok {
		return b.Buffered()
	}
	return 0
}

func (s *stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.Stream.Close()
	s.e.running.Add(-1)
	if u, ok := s.Stream.Usage(); ok && !s.first.IsZero() {
		s.e.observe(u.CompletionTokens, time.Since(s.first))
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
