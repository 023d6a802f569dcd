package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/scripts/tinymodel/tinygguf"
	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/ollama/ollama/api"
)

// TestPlaceStates: Place updates the models' states at once, before any
// Ollama is involved.
func TestPlaceStates(t *testing.T) {
	cfg := Default()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, "http://127.0.0.1:1", t.TempDir()
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
	cfg := Default()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, "http://127.0.0.1:1", t.TempDir()
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

	cfg := Default()
	cfg.Enabled, cfg.Binary, cfg.DataDir = true, bin, filepath.Join(dir, "ollama")
	cfg.NumThread = 1
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
		pgid := e.ProcessGroup()
		e.Stop()
		if left := GroupMembers(pgid); pgid != 0 && len(left) > 0 {
			t.Errorf("processes of ollama's group %d outlived Stop: %v", pgid, left)
		}
	})
	waitFor(t, time.Minute, "ollama to start", func() bool { ok, _ := e.Ready(); return ok })
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
		waitFor(t, time.Minute, "tiny to be ready", readyAre("tiny"))
		answers("tiny")
		if got := running(); !slices.Equal(got, []string{"tiny"}) {
			t.Fatalf("/api/ps lists %v, want tiny", got)
		}
		waitFor(t, 5*time.Second, "OnChange with tiny ready", func() bool { return gossiped("tiny") })
	})

	t.Run("removed at run time: refused at once, then unloaded", func(t *testing.T) {
		resetGossip()
		e.Place(nil)
		if _, ok := e.Models()["tiny"]; ok {
			t.Fatal("a removed model is still listed")
		}
		refused("tiny")
		waitFor(t, 30*time.Second, "tiny to leave /api/ps", func() bool { return len(running()) == 0 })
		waitFor(t, 5*time.Second, "OnChange with no model ready", func() bool { return gossiped() })
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
		waitFor(t, time.Minute, "tiny to be ready", readyAre("tiny"))
		if got := quant(); got != "Q8_0" {
			t.Fatalf("quantization %s, want Q8_0", got)
		}
		e.Place([]Model{{Name: "tiny", GGUF: tiny}})
		if st := e.Models()["tiny"]; st.State != StateLoading {
			t.Fatalf("tiny with a new spec: %+v, want loading", st)
		}
		waitFor(t, time.Minute, "tiny to be ready again", readyAre("tiny"))
		if got := quant(); got != "F16" {
			t.Fatalf("quantization %s after dropping quantize, want F16", got)
		}
		answers("tiny")
		// The old model's runner went: one tiny is loaded, not two.
		waitFor(t, 30*time.Second, "one runner", func() bool { return len(running()) == 1 })
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
		waitFor(t, time.Minute, "b to be ready", readyAre("b"))
		answers("b")
		waitFor(t, 30*time.Second, "/api/ps to list b alone", func() bool { return slices.Equal(running(), []string{"b"}) })

		// Removed and placed again at once: b must come back, whether or
		// not the reconciler unloaded it in between.
		e.Place(nil)
		e.Place([]Model{{Name: "b", GGUF: tiny}})
		waitFor(t, time.Minute, "b to be ready again", readyAre("b"))
		answers("b")
	})

	t.Run("a restart loads the current set", func(t *testing.T) {
		pgid := e.ProcessGroup()
		syscall.Kill(pgid, syscall.SIGKILL)
		waitFor(t, 30*time.Second, "the restart to be noticed", func() bool { return e.ProcessGroup() != pgid || !e.Stats().Up })
		waitFor(t, 2*time.Minute, "b to be ready on the new server", func() bool {
			ok, _ := e.Ready()
			return ok && e.ProcessGroup() != pgid && slices.Equal(e.ReadyModels(), []string{"b"})
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
