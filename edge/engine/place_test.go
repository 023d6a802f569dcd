package engine

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/ollama/ollama/api"
)

// TestPlaceStates: Place updates the models' states at once, before any
// Ollama is involved.
func TestPlaceStates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, "http://127.0.0.1:1", t.TempDir()
	cfg.HandoffTimeout = 0 // removed means gone at once; TestHandoff has the rest
	cfg.Models = []Model{{Name: "a", GGUF: "a.gguf"}, {Name: "b", GGUF: "b.gguf"}}
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Models(); len(got) != 2 || got["a"].State != StateLoading || got["b"].State != StateLoading {
		t.Fatalf("the config's models are the first set: %+v", got)
	}
	e.setState("a", StateReady)
	e.setState("b", StateReady)

	e.Place([]Model{
		{Name: "a", GGUF: "a.gguf"},                   // unchanged: stays ready
		{Name: "b", GGUF: "b.gguf", Quantize: "q8_0"}, // changed: loading again
		{Name: "c", Pull: true},                       // new
		{Name: "c", GGUF: "other.gguf"},               // repeated: the first wins
		{Name: "d", GGUF: "d.gguf", Pull: true},       // invalid: failed
		{Name: "bad name!", Pull: true},               // refused
	})
	got := e.Models()
	want := map[string]string{"a": StateReady, "b": StateLoading, "c": StateLoading, "d": StateFailed}
	if len(got) != len(want) {
		t.Fatalf("models %+v, want states %v", got, want)
	}
	for name, state := range want {
		if got[name].State != state {
			t.Errorf("%s: %+v, want %s", name, got[name], state)
		}
	}
	if !strings.Contains(got["d"].Error, "exclude each other") {
		t.Errorf("d: error %q", got["d"].Error)
	}
	if m, _ := e.wanted("c"); !m.Pull {
		t.Errorf("c placed as %+v, want the first entry", m)
	}

	e.Place([]Model{{Name: "c", Pull: true}})
	if got := e.Models(); len(got) != 1 || got["c"].State != StateLoading {
		t.Fatalf("after removing a, b and d: %+v", got)
	}
	for _, name := range []string{"a", "b", "d"} {
		if st, ok := e.modelState(name); !ok || st.State != stateRemoved {
			t.Errorf("%s: %+v %v, want removed", name, st, ok)
		}
	}
	if _, ok := e.modelState("never-placed"); ok {
		t.Error("a model never placed must pass through to Ollama")
	}
	e.Place([]Model{{Name: "a", GGUF: "a.gguf"}})
	if st, ok := e.modelState("a"); !ok || st.State != StateLoading {
		t.Errorf("a placed again: %+v", st)
	}
}

// TestNextStep: what the reconciler does next, given what the server was
// given and what is placed.
func TestNextStep(t *testing.T) {
	a, a8, b := Model{Name: "a", GGUF: "a.gguf"}, Model{Name: "a", GGUF: "a.gguf", Quantize: "q8_0"}, Model{Name: "b", Pull: true}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, "http://127.0.0.1:1", t.TempDir()
	cfg.HandoffTimeout = 0 // removed means gone at once; TestHandoff has the rest
	for _, tc := range []struct {
		name   string
		have   []Model
		places [][]Model // Place calls, in order
		ready  []string  // models marked ready after the calls
		want   step
		idle   bool
	}{
		{name: "nothing to do", idle: true},
		{name: "load a new model", places: [][]Model{{a, b}}, want: step{model: a}},
		{name: "load in placement order", places: [][]Model{{b, a}}, want: step{model: b}},
		{name: "in sync", have: []Model{a}, places: [][]Model{{a}}, ready: []string{"a"}, idle: true},
		{name: "unload a removed model first", have: []Model{a}, places: [][]Model{{b}}, want: step{model: a, unload: true}},
		{name: "unload the old spec first", have: []Model{a}, places: [][]Model{{a8}}, want: step{model: a, unload: true}},
		{name: "failed stays failed", have: []Model{a}, places: [][]Model{{a}}, idle: true},
		{name: "removed and placed again before the unload", have: []Model{a}, places: [][]Model{{a}, nil, {a}}, ready: []string{"a"}, want: step{model: a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]Model{}
			for _, m := range tc.have {
				have[m.Name] = m
			}
			for i, set := range tc.places {
				e.Place(set)
				if i == 0 {
					// The server loaded (or failed) what it was given.
					for _, m := range tc.have {
						e.setState(m.Name, StateFailed)
					}
					for _, name := range tc.ready {
						e.setState(name, StateReady)
					}
				}
			}
			got, ok := e.next(have)
			if ok == tc.idle || (ok && got != tc.want) {
				t.Fatalf("next = %+v %v, want %+v (idle %v)", got, ok, tc.want, tc.idle)
			}
		})
	}
}

func (e *Engine) setState(name, state string) {
	e.mu.Lock()
	e.models[name] = ModelStatus{State: state}
	e.mu.Unlock()
}

// TestPlace runs the reconciler against a real Ollama: models placed and
// removed at run time are loaded and unloaded, a changed spec is created
// again, Place calls coalesce and a restart loads the current set.
func TestPlace(t *testing.T) {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)

	cfg := DefaultConfig()
	cfg.Enabled, cfg.Binary, cfg.DataDir = true, bin, filepath.Join(dir, "ollama")
	cfg.NumThread = 1
	cfg.HandoffTimeout = 0 // removed means gone at once; TestHandoff has the rest
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// The callback records what the node would gossip each time.
	var (
		mu      sync.Mutex
		gossips [][]string
	)
	e.OnChange(func() {
		ready := e.ReadyModels()
		mu.Lock()
		gossips = append(gossips, ready)
		mu.Unlock()
	})
	gossiped := func(want ...string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(gossips, func(g []string) bool { return slices.Equal(g, want) })
	}
	resetGossip := func() {
		mu.Lock()
		gossips = nil
		mu.Unlock()
	}
	e.Start()
	t.Cleanup(func() {
		pgid := e.processGroup()
		e.Stop()
		if left := GroupMembers(pgid); pgid != 0 && len(left) > 0 {
			t.Errorf("processes of ollama's group %d outlived Stop: %v", pgid, left)
		}
	})
	wait.For(t, time.Minute, "ollama to start", func() bool { ok, _ := e.Ready(); return ok })
	if got := e.ReadyModels(); len(got) != 0 {
		t.Fatalf("ready models %v with none placed", got)
	}
	client := func() *api.Client {
		u, _ := url.Parse(e.URL())
		return api.NewClient(u, http.DefaultClient)
	}
	running := func() []string {
		ps, err := client().ListRunning(context.Background())
		if err != nil {
			t.Fatalf("/api/ps: %v", err)
		}
		var names []string
		for _, m := range ps.Models {
			names = append(names, strings.TrimSuffix(m.Name, ":latest"))
		}
		slices.Sort(names)
		return names
	}
	readyAre := func(want ...string) func() bool {
		return func() bool { return slices.Equal(e.ReadyModels(), want) }
	}
	answers := func(model string) {
		t.Helper()
		resp, err := e.Do(context.Background(), chatReq(model, false, 8), "")
		if err != nil {
			t.Fatalf("chat with %s: %v", model, err)
		}
		cc, err := resp.ChatCompletion()
		if err != nil {
			t.Fatal(err)
		}
		if got := content(cc); got != expected(8) {
			t.Fatalf("%s answered %q, want %q", model, got, expected(8))
		}
	}
	refused := func(model string) {
		t.Helper()
		_, err := e.Do(context.Background(), chatReq(model, false, 8), "")
		var le *llm.Error
		if !errors.As(err, &le) || !le.Retryable || le.Status != http.StatusServiceUnavailable {
			t.Fatalf("request to %s: %v, want a retryable 503", model, err)
		}
	}

	t.Run("placed at run time: loaded and served", func(t *testing.T) {
		e.Place([]Model{{Name: "tiny", GGUF: tiny, Quantize: "q8_0"}})
		if ok, notReady := e.Ready(); ok || !slices.Equal(notReady, []string{"tiny"}) {
			t.Fatalf("Ready() = %v %v right after Place; a loading model holds readiness back", ok, notReady)
		}
		wait.For(t, time.Minute, "tiny to be ready", readyAre("tiny"))
		answers("tiny")
		if got := running(); !slices.Equal(got, []string{"tiny"}) {
			t.Fatalf("/api/ps lists %v, want tiny", got)
		}
		wait.For(t, 5*time.Second, "OnChange with tiny ready", func() bool { return gossiped("tiny") })
	})

	t.Run("removed at run time: refused at once, then unloaded", func(t *testing.T) {
		resetGossip()
		e.Place(nil)
		if _, ok := e.Models()["tiny"]; ok {
			t.Fatal("a removed model is still listed")
		}
		refused("tiny")
		wait.For(t, 30*time.Second, "tiny to leave /api/ps", func() bool { return len(running()) == 0 })
		wait.For(t, 5*time.Second, "OnChange with no model ready", func() bool { return gossiped() })
		if ok, notReady := e.Ready(); !ok || len(notReady) != 0 {
			t.Fatalf("Ready() = %v %v with nothing placed", ok, notReady)
		}
		refused("tiny") // still: a request must not load it back
		if got := running(); len(got) != 0 {
			t.Fatalf("a request for a removed model loaded it: %v", got)
		}
	})

	t.Run("a changed quantization is created again", func(t *testing.T) {
		quant := func() string {
			show, err := client().Show(context.Background(), &api.ShowRequest{Model: "tiny"})
			if err != nil {
				t.Fatal(err)
			}
			return show.Details.QuantizationLevel
		}
		e.Place([]Model{{Name: "tiny", GGUF: tiny, Quantize: "q8_0"}})
		wait.For(t, time.Minute, "tiny to be ready", readyAre("tiny"))
		if got := quant(); got != "Q8_0" {
			t.Fatalf("quantization %s, want Q8_0", got)
		}
		e.Place([]Model{{Name: "tiny", GGUF: tiny}})
		if st := e.Models()["tiny"]; st.State != StateLoading {
			t.Fatalf("tiny with a new spec: %+v, want loading", st)
		}
		wait.For(t, time.Minute, "tiny to be ready again", readyAre("tiny"))
		if got := quant(); got != "F16" {
			t.Fatalf("quantization %s after dropping quantize, want F16", got)
		}
		answers("tiny")
		// The old model's runner went: one tiny is loaded, not two.
		wait.For(t, 30*time.Second, "one runner", func() bool { return len(running()) == 1 })
	})

	t.Run("Place calls coalesce: the latest set wins", func(t *testing.T) {
		e.Place([]Model{{Name: "a", GGUF: tiny}})
		e.Place([]Model{{Name: "a", GGUF: tiny}, {Name: "b", GGUF: tiny}})
		e.Place([]Model{{Name: "b", GGUF: tiny}})
		if got := e.Models(); len(got) != 1 || got["b"].State != StateLoading {
			t.Fatalf("models %+v right after Place, want b loading", got)
		}
		refused("tiny")
		refused("a")
		wait.For(t, time.Minute, "b to be ready", readyAre("b"))
		answers("b")
		wait.For(t, 30*time.Second, "/api/ps to list b alone", func() bool { return slices.Equal(running(), []string{"b"}) })

		// Removed and placed again at once: b must come back, whether or
		// not the reconciler unloaded it in between.
		e.Place(nil)
		e.Place([]Model{{Name: "b", GGUF: tiny}})
		wait.For(t, time.Minute, "b to be ready again", readyAre("b"))
		answers("b")
	})

	t.Run("a restart loads the current set", func(t *testing.T) {
		pgid := e.processGroup()
		syscall.Kill(pgid, syscall.SIGKILL)
		wait.For(t, 30*time.Second, "the restart to be noticed", func() bool { return e.processGroup() != pgid || !e.Stats().Up })
		wait.For(t, 2*time.Minute, "b to be ready on the new server", func() bool {
			ok, _ := e.Ready()
			return ok && e.processGroup() != pgid && slices.Equal(e.ReadyModels(), []string{"b"})
		})
		if got := e.Models(); len(got) != 1 {
			t.Fatalf("models %+v after the restart, want b alone", got)
		}
		answers("b")
		if got := running(); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("/api/ps lists %v after the restart, want b", got)
		}
	})
}

// fakeOllama answers the model-management calls of Ollama's API the
// reconciler makes, and records them, so the reconciler's order of work
// can be checked exactly. While gate is set, creates wait for it.
type fakeOllama struct {
	mu      sync.Mutex
	models  map[string]bool // created
	loaded  map[string]bool
	calls   []string // "create a", "cancel a", "load a", "unload a"
	busy    int      // management calls in progress
	maxBusy int
	gate    chan struct{}
}

func newFakeOllama(t *testing.T) (*fakeOllama, string) {
	f := &fakeOllama{models: map[string]bool{}, loaded: map[string]bool{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeOllama) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model     string        `json:"model"`
		Prompt    string        `json:"prompt"`
		KeepAlive *api.Duration `json:"keep_alive"`
	}
	if r.Method == http.MethodPost {
		json.NewDecoder(r.Body).Decode(&req)
	}
	notFound := func() {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"model '`+req.Model+`' not found"}`)
	}
	switch {
	case r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/api/blobs/"):
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/api/ps":
		f.mu.Lock()
		var ps api.ProcessResponse
		for name := range f.loaded {
			ps.Models = append(ps.Models, api.ProcessModelResponse{Name: name})
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(ps)
	case r.URL.Path == "/api/show":
		f.mu.Lock()
		ok := f.models[req.Model]
		f.mu.Unlock()
		if !ok {
			notFound()
			return
		}
		io.WriteString(w, `{}`)
	case r.URL.Path == "/api/create":
		f.enter("create " + req.Model)
		defer f.leave()
		f.mu.Lock()
		gate := f.gate
		f.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				f.record("cancel " + req.Model)
				return
			}
		}
		f.mu.Lock()
		f.models[req.Model] = true
		f.mu.Unlock()
		io.WriteString(w, `{"status":"success"}`+"\n")
	case r.URL.Path == "/api/generate":
		f.mu.Lock()
		ok := f.models[req.Model]
		f.mu.Unlock()
		if !ok {
			notFound()
			return
		}
		what := "load "
		if req.Prompt == "" && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
			what = "unload "
		}
		f.enter(what + req.Model)
		defer f.leave()
		f.mu.Lock()
		f.loaded[req.Model] = what == "load "
		if what == "unload " {
			delete(f.loaded, req.Model)
		}
		f.mu.Unlock()
		io.WriteString(w, `{"model":"`+req.Model+`","done":true}`)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeOllama) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

// enter records a management call and counts it in progress. A call
// the engine cancelled ends for the engine when its client returns, a
// moment before this server's handler notices; enter gives such a call a
// second to leave before counting an overlap. A call still really in
// progress (one held at the gate) does not leave, so the overlap counts.
func (f *fakeOllama) enter(call string) {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		f.mu.Lock()
		idle := f.busy == 0
		f.mu.Unlock()
		if idle {
			break
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.busy++
	f.maxBusy = max(f.maxBusy, f.busy)
	f.mu.Unlock()
}

func (f *fakeOllama) leave() {
	f.mu.Lock()
	f.busy--
	f.mu.Unlock()
}

// since returns the calls recorded from the n-th on.
func (f *fakeOllama) since(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[min(n, len(f.calls)):])
}

func (f *fakeOllama) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeOllama) setGate(g chan struct{}) {
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
}

func (f *fakeOllama) loadedModels() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name := range f.loaded {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestReconcileOrder runs the reconciler against a fake Ollama, where
// the order of its work can be checked exactly: Place calls made during
// a long create coalesce into one more pass with the latest set, a load
// made pointless is cancelled, and management calls never overlap.
func TestReconcileOrder(t *testing.T) {
	f, base := newFakeOllama(t)
	dir := t.TempDir()
	gguf := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	m := func(name string) Model { return Model{Name: name, GGUF: gguf} }
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, base, filepath.Join(dir, "state")
	cfg.HandoffTimeout = 0 // removed means gone at once; TestHandoff has the rest
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		gossips [][]string
	)
	e.OnChange(func() {
		ready := e.ReadyModels()
		mu.Lock()
		gossips = append(gossips, ready)
		mu.Unlock()
	})
	gossiped := func(want ...string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.ContainsFunc(gossips, func(g []string) bool { return slices.Equal(g, want) })
		}
	}
	e.Start()
	defer e.Stop()
	wait.For(t, 10*time.Second, "the engine to attach", func() bool { ok, _ := e.Ready(); return ok })
	readyAre := func(want ...string) func() bool {
		return func() bool { return slices.Equal(e.ReadyModels(), want) }
	}
	hasCall := func(from int, call string) func() bool {
		return func() bool { return slices.Contains(f.since(from), call) }
	}

	t.Run("coalesce", func(t *testing.T) {
		gate := make(chan struct{})
		f.setGate(gate)
		from := f.mark()
		e.Place([]Model{m("a")})
		wait.For(t, 10*time.Second, "a's create to start", hasCall(from, "create a"))
		// a stays placed, so its create goes on; the sets in between
		// are never worked on.
		e.Place([]Model{m("a"), m("b")})
		e.Place([]Model{m("a"), m("c")})
		e.Place([]Model{m("a"), m("d")})
		f.setGate(nil)
		close(gate)
		wait.For(t, 10*time.Second, "a and d to be ready", readyAre("a", "d"))
		if got, want := f.since(from), []string{"create a", "load a", "create d", "load d"}; !slices.Equal(got, want) {
			t.Fatalf("calls %q, want %q", got, want)
		}
		wait.For(t, 5*time.Second, "OnChange with a and d ready", gossiped("a", "d"))
	})

	t.Run("remove", func(t *testing.T) {
		from := f.mark()
		e.Place([]Model{m("d")})
		if _, err := e.Do(context.Background(), chatReq("a", false, 4), ""); !isRetryable503(err) {
			t.Fatalf("request to a removed model: %v, want a retryable 503", err)
		}
		wait.For(t, 10*time.Second, "a to be unloaded", func() bool { return slices.Equal(f.loadedModels(), []string{"d"}) })
		if got, want := f.since(from), []string{"unload a"}; !slices.Equal(got, want) {
			t.Fatalf("calls %q, want %q", got, want)
		}
		wait.For(t, 5*time.Second, "OnChange with d ready", gossiped("d"))
	})

	t.Run("changed spec", func(t *testing.T) {
		from := f.mark()
		e.Place([]Model{{Name: "d", GGUF: gguf, Quantize: "q8_0"}})
		if got := e.ReadyModels(); len(got) != 0 {
			t.Fatalf("ready %v right after its spec changed", got)
		}
		wait.For(t, 10*time.Second, "d to be ready again", readyAre("d"))
		if got, want := f.since(from), []string{"unload d", "create d", "load d"}; !slices.Equal(got, want) {
			t.Fatalf("calls %q, want %q", got, want)
		}
	})

	t.Run("a load made pointless is cancelled", func(t *testing.T) {
		gate := make(chan struct{})
		defer close(gate)
		f.setGate(gate)
		defer f.setGate(nil)
		from := f.mark()
		e.Place([]Model{{Name: "d", GGUF: gguf, Quantize: "q8_0"}, m("x")})
		wait.For(t, 10*time.Second, "x's create to start", hasCall(from, "create x"))
		e.Place(nil)
		wait.For(t, 10*time.Second, "x's create to be cancelled", hasCall(from, "cancel x"))
		wait.For(t, 10*time.Second, "nothing loaded", func() bool { return len(f.loadedModels()) == 0 })
		wait.For(t, 5*time.Second, "OnChange with none ready", gossiped())
		if ok, notReady := e.Ready(); !ok || len(notReady) != 0 || len(e.Models()) != 0 {
			t.Fatalf("Ready() = %v %v, models %v, with nothing placed", ok, notReady, e.Models())
		}
	})

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxBusy != 1 {
		t.Fatalf("%d management calls ran at once, want 1", f.maxBusy)
	}
}

func isRetryable503(err error) bool {
	var le *llm.Error
	return errors.As(err, &le) && le.Retryable && le.Status == http.StatusServiceUnavailable
}

// TestHandoff: make before break. A ready model that loses its
// placement stays loaded and serving, marked leaving, until Release
// (the node saw it ready where it is placed now) or until the handoff
// timeout; placed again meanwhile, it is plain ready without a reload.
func TestHandoff(t *testing.T) {
	f, base := newFakeOllama(t)
	dir := t.TempDir()
	gguf := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	a := Model{Name: "a", GGUF: gguf}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, base, filepath.Join(dir, "state")
	cfg.HandoffTimeout = 2 * time.Second
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	defer e.Stop()
	wait.For(t, 10*time.Second, "the engine to attach", func() bool { ok, _ := e.Ready(); return ok })
	placeReady := func() {
		t.Helper()
		e.Place([]Model{a})
		wait.For(t, 10*time.Second, "a to be ready", func() bool { return slices.Equal(e.ReadyModels(), []string{"a"}) })
	}
	leavingNow := func() {
		t.Helper()
		if st := e.Models()["a"]; st.State != StateReady || !st.Leaving {
			t.Fatalf("a right after losing its placement: %+v, want ready and leaving", st)
		}
		if !e.ModelReady("a") || !slices.Equal(e.ReadyModels(), []string{"a"}) || !slices.Equal(e.Leaving(), []string{"a"}) {
			t.Fatalf("a leaving: ModelReady %v, ReadyModels %v, Leaving %v; it must still serve and be gossiped", e.ModelReady("a"), e.ReadyModels(), e.Leaving())
		}
		if _, err := e.Do(context.Background(), chatReq("a", false, 4), ""); isRetryable503(err) {
			t.Fatalf("a request to a leaving model was refused: %v", err)
		}
	}
	gone := func() {
		t.Helper()
		if _, ok := e.Models()["a"]; ok || e.ModelReady("a") || len(e.Leaving()) != 0 {
			t.Fatalf("a after its handoff: models %v, leaving %v", e.Models(), e.Leaving())
		}
		if _, err := e.Do(context.Background(), chatReq("a", false, 4), ""); !isRetryable503(err) {
			t.Fatalf("request to a handed-off model: %v, want a retryable 503", err)
		}
		wait.For(t, 10*time.Second, "a to be unloaded", func() bool { return len(f.loadedModels()) == 0 })
	}

	t.Run("serves until released", func(t *testing.T) {
		placeReady()
		from := f.mark()
		e.Place(nil)
		leavingNow()
		time.Sleep(300 * time.Millisecond) // the reconciler would have unloaded it by now
		if got := f.since(from); slices.Contains(got, "unload a") || !slices.Equal(f.loadedModels(), []string{"a"}) {
			t.Fatalf("a leaving was unloaded: calls %q, loaded %v", got, f.loadedModels())
		}
		leavingNow()
		e.Release("a")
		gone()
		if got := f.since(from); !slices.Equal(got, []string{"unload a"}) {
			t.Fatalf("calls %q, want one unload", got)
		}
		e.Release("a") // not leaving: nothing happens
	})

	t.Run("placed again while leaving: ready, no reload", func(t *testing.T) {
		placeReady()
		from := f.mark()
		e.Place(nil)
		leavingNow()
		e.Place([]Model{a})
		if st := e.Models()["a"]; st.State != StateReady || st.Leaving || len(e.Leaving()) != 0 {
			t.Fatalf("a placed again: %+v, leaving %v", st, e.Leaving())
		}
		time.Sleep(300 * time.Millisecond)
		if got := f.since(from); len(got) != 0 {
			t.Fatalf("calls %q, want none", got)
		}
	})

	t.Run("unloaded when the handoff times out", func(t *testing.T) {
		from := f.mark()
		left := time.Now()
		e.Place(nil)
		leavingNow()
		wait.For(t, 15*time.Second, "a to be unloaded", func() bool { return slices.Contains(f.since(from), "unload a") })
		if took := time.Since(left); took < cfg.HandoffTimeout {
			t.Fatalf("a unloaded %v after leaving, before the handoff timeout %v", took, cfg.HandoffTimeout)
		}
		gone()
	})
}
