package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// These tests run a real Ollama (bin/ollama, from `make ollama`) with
// the project's tiny generated model; see enginetest.

// corrupt writes broken GGUF files of three kinds into dir.
func corrupt(t *testing.T, dir, good string) (wrongCount, truncated, random string) {
	t.Helper()
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	wc := bytes.Clone(b)
	wc[8] += 7 // header: magic(4) version(4) tensor_count(8): claim 7 more tensors
	wrongCount = filepath.Join(dir, "wrong-count.gguf")
	truncated = filepath.Join(dir, "truncated.gguf")
	random = filepath.Join(dir, "random.gguf")
	rnd := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	for path, data := range map[string][]byte{wrongCount: wc, truncated: b[:len(b)*2/3], random: rnd} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return
}

func chatReq(model string, stream bool, maxTokens int) *llm.Request {
	body := `{"model":"` + model + `","max_tokens":` + strconv.Itoa(maxTokens) + `,"stream":` + btoa(stream) +
		`,"messages":[{"role":"user","content":"hello"}]}`
	return &llm.Request{ID: "req_test", Op: llm.OpChat, Model: model, Stream: stream, Body: []byte(body)}
}

func btoa(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// collect reads a stream to its end and returns the content and the
// error that ended it (nil for a clean end).
func collect(s llm.Stream) (string, error) {
	defer s.Close()
	var sb strings.Builder
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			return sb.String(), nil
		}
		if err != nil {
			return sb.String(), err
		}
		if c.Raw != nil {
			if err := c.Parse(); err != nil {
				return sb.String(), err
			}
		}
		for _, ch := range c.Choices {
			sb.WriteString(ch.Content)
		}
	}
}

func expected(n int) string { return enginetest.Expected(n) }

func TestLocalEngine(t *testing.T) {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	repeat := enginetest.Model(t, dir, "repeat", tinygguf.VariantRepeat)
	wrongCount, truncated, random := corrupt(t, dir, tiny)

	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.Binary = bin
	cfg.DataDir = filepath.Join(dir, "ollama")
	cfg.NumParallel = 2
	cfg.Queue = 2
	cfg.NumThread = 1
	cfg.Models = []Model{
		{Name: "tiny", GGUF: tiny, Quantize: "q8_0"},
		{Name: "broken-count", GGUF: wrongCount},
		{Name: "broken-truncated", GGUF: truncated},
		{Name: "broken-random", GGUF: random},
		{Name: "repeat", GGUF: repeat},
	}
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if ready, _ := e.Ready(); ready {
		t.Fatal("ready before start")
	}
	e.Start()
	t.Cleanup(func() {
		pgid := e.processGroup()
		e.Stop()
		if left := GroupMembers(pgid); pgid != 0 && len(left) > 0 {
			t.Errorf("processes of ollama's group %d outlived Stop: %v", pgid, left)
		}
	})
	wait.For(t, 3*time.Minute, "placed models to load", func() bool { ok, _ := e.Ready(); return ok })

	t.Run("corrupt models fail cleanly, the rest serve", func(t *testing.T) {
		st := e.Models()
		if st["tiny"].State != StateReady || st["repeat"].State != StateReady {
			t.Fatalf("good models not ready: %+v", st)
		}
		for _, name := range []string{"broken-count", "broken-truncated", "broken-random"} {
			if st[name].State != StateFailed || !strings.Contains(st[name].Error, ErrBadGGUF.Error()) {
				t.Errorf("%s: %+v, want failed with %q", name, st[name], ErrBadGGUF)
			}
		}
		_, notReady := e.Ready()
		if strings.Join(notReady, ",") != "broken-count,broken-random,broken-truncated" {
			t.Errorf("not ready = %v", notReady)
		}
		_, err := e.Do(context.Background(), chatReq("broken-count", false, 4), "")
		var le *llm.Error
		if !errors.As(err, &le) || !le.Retryable || le.Status != http.StatusServiceUnavailable {
			t.Fatalf("request to a failed model: %v, want a retryable 503", err)
		}
	})

	t.Run("chat", func(t *testing.T) {
		resp, err := e.Do(context.Background(), chatReq("tiny", false, 24), "")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := resp.ChatCompletion()
		if err != nil {
			t.Fatal(err)
		}
		if got := content(cc); got != expected(24) {
			t.Fatalf("content %q, want %q", got, expected(24))
		}
		if cc.Choices[0].FinishReason != llm.FinishLength || resp.Usage.CompletionTokens != 24 {
			t.Fatalf("finish %q usage %+v", cc.Choices[0].FinishReason, resp.Usage)
		}
	})

	t.Run("chat streamed", func(t *testing.T) {
		resp, err := e.Do(context.Background(), chatReq("tiny", true, 24), "")
		if err != nil {
			t.Fatal(err)
		}
		got, err := collect(resp.Stream)
		if err != nil || got != expected(24) {
			t.Fatalf("stream %q, %v; want %q", got, err, expected(24))
		}
		if e.Stats().TokensPerSecond <= 0 {
			t.Fatal("no generation speed recorded")
		}
	})

	t.Run("four concurrent requests", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := e.Do(context.Background(), chatReq("tiny", i%2 == 0, 16), "")
				if err != nil {
					errs <- err
					return
				}
				if resp.Stream != nil {
					if got, err := collect(resp.Stream); err != nil || got != expected(16) {
						errs <- errors.New("stream: " + got)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if s := e.Stats(); s.Running != 0 {
			t.Fatalf("running = %d after all finished", s.Running)
		}
	})

	t.Run("a full queue answers 429", func(t *testing.T) {
		// NumParallel requests run and Queue more wait inside Ollama (their
		// Do blocks until a slot frees); the next one is refused at once.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		for range cfg.NumParallel + cfg.Queue {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Long enough to hold the slots for the test (about 5 s at
				// the tiny model's speed), short enough that a request
				// Ollama had queued, and starts after its client left,
				// cannot hold a slot into the next test.
				if resp, err := e.Do(ctx, chatReq("tiny", true, 20000), ""); err == nil {
					collect(resp.Stream)
				}
			}()
		}
		wait.For(t, time.Minute, "the queue to fill", func() bool { return e.Stats().Running == cfg.NumParallel+cfg.Queue })
		_, err := e.Do(ctx, chatReq("tiny", true, 4), "")
		var le *llm.Error
		if !errors.As(err, &le) || le.Status != http.StatusTooManyRequests || !le.Retryable || le.RetryAfter <= 0 {
			t.Fatalf("request beyond the queue: %v, want a retryable 429 with Retry-After", err)
		}
		if s := e.Stats(); s.Queued != cfg.Queue {
			t.Fatalf("queued = %d, want %d", s.Queued, cfg.Queue)
		}
		cancel()
		wg.Wait()
		wait.For(t, 10*time.Second, "the queue to drain", func() bool { return e.Stats().Running == 0 })
	})

	t.Run("cancel stops generation", func(t *testing.T) {
		// Two endless generations fill both of Ollama's slots; the client
		// cancels them after a few tokens. Short requests afterwards are
		// answered, which they would not be for many minutes if the
		// cancelled generations still held the slots.
		for range cfg.NumParallel {
			ctx, cancel := context.WithCancel(context.Background())
			resp, err := e.Do(ctx, chatReq("tiny", true, 1000000), "")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := resp.Stream.Next(); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			resp.Stream.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		for range cfg.NumParallel {
			resp, err := e.Do(ctx, chatReq("tiny", false, 8), "")
			if err != nil {
				t.Fatalf("after cancel: %v", err)
			}
			cc, _ := resp.ChatCompletion()
			if got := content(cc); got != expected(8) {
				t.Fatalf("after cancel: %q", got)
			}
		}
	})

	t.Run("a stream that ends without done is an error", func(t *testing.T) {
		// The repeat model makes Ollama stop after 30 identical tokens
		// with no done line and no error.
		resp, err := e.Do(context.Background(), chatReq("repeat", true, 200), "")
		if err != nil {
			t.Fatal(err)
		}
		got, err := collect(resp.Stream)
		if !errors.Is(err, llm.ErrStreamCut) {
			t.Fatalf("stream ended with %v after %q; want ErrStreamCut", err, got)
		}
		if got == "" || strings.Trim(got, string(rune(tinygguf.RepeatToken))) != "" {
			t.Fatalf("content %q", got)
		}
	})

	t.Run("attach to a running Ollama", func(t *testing.T) {
		acfg := DefaultConfig()
		acfg.Enabled, acfg.URL, acfg.DataDir = true, e.URL(), filepath.Join(dir, "attached")
		acfg.Models = []Model{{Name: "tiny", GGUF: tiny, Quantize: "q8_0"}}
		a, err := New(acfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		a.Start()
		wait.For(t, time.Minute, "the attached engine", func() bool { ok, _ := a.Ready(); return ok })
		resp, err := a.Do(context.Background(), chatReq("tiny", false, 6), "")
		if err != nil {
			t.Fatal(err)
		}
		if cc, _ := resp.ChatCompletion(); content(cc) != expected(6) {
			t.Fatalf("attached: %q", content(cc))
		}
		a.Stop()
		if a.processGroup() != 0 || !e.Stats().Up {
			t.Fatal("an attached engine must neither start nor stop Ollama")
		}
		if _, err := e.Do(context.Background(), chatReq("tiny", false, 4), ""); err != nil {
			t.Fatalf("the Ollama attached to must still serve: %v", err)
		}
	})

	// killServer kills the Ollama server alone, not its group, as a crash
	// would, and waits for the engine to be back with a new server. A
	// runner idle at the time survives its server (seen with Ollama
	// 0.17.4), so this proves the supervisor reaps it.
	killServer := func(t *testing.T, during func()) {
		pgid := e.processGroup()
		if n := len(GroupMembers(pgid)); n < 2 {
			t.Fatalf("ollama's group has %d processes; want the server and a runner", n)
		}
		restarts := e.Stats().Restarts
		syscall.Kill(pgid, syscall.SIGKILL)
		during()
		wait.For(t, 2*time.Minute, "the engine to come back", func() bool {
			ok, _ := e.Ready()
			return ok && e.processGroup() != pgid
		})
		if left := GroupMembers(pgid); len(left) > 0 {
			t.Fatalf("the killed server's runners are orphaned: %v", left)
		}
		if e.Stats().Restarts != restarts+1 {
			t.Fatalf("restarts = %d, want %d", e.Stats().Restarts, restarts+1)
		}
		resp, err := e.Do(context.Background(), chatReq("tiny", false, 8), "")
		if err != nil {
			t.Fatal(err)
		}
		cc, _ := resp.ChatCompletion()
		if got := content(cc); got != expected(8) {
			t.Fatalf("after restart: %q", got)
		}
	}

	t.Run("kill -9 while idle: recovery, no orphaned runner", func(t *testing.T) {
		killServer(t, func() {
			// Until the new server is up, requests fail fast and
			// retryably, so the router moves them elsewhere.
			if _, err := e.Do(context.Background(), chatReq("tiny", false, 4), ""); err != nil {
				var le *llm.Error
				if !errors.As(err, &le) || !le.Retryable {
					t.Fatalf("request during the restart: %v, want a retryable error", err)
				}
			}
		})
	})

	t.Run("kill -9 mid-stream: the stream ends in an error", func(t *testing.T) {
		resp, err := e.Do(context.Background(), chatReq("tiny", true, 1000000), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Stream.Next(); err != nil {
			t.Fatal(err)
		}
		killServer(t, func() {
			if got, err := collect(resp.Stream); err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("a stream cut by the crash ended cleanly after %d bytes", len(got))
			}
		})
	})
}

func TestCheckGGUF(t *testing.T) {
	dir := t.TempDir()
	good := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	if err := CheckGGUF(good); err != nil {
		t.Fatalf("good model refused: %v", err)
	}
	wrongCount, truncated, random := corrupt(t, dir, good)
	empty := filepath.Join(dir, "empty.gguf")
	os.WriteFile(empty, nil, 0o644)
	for _, path := range []string{wrongCount, truncated, random, empty, filepath.Join(dir, "missing.gguf")} {
		if err := CheckGGUF(path); !errors.Is(err, ErrBadGGUF) {
			t.Errorf("%s: %v, want ErrBadGGUF", filepath.Base(path), err)
		}
	}
}

func FuzzCheckGGUF(f *testing.F) {
	var b bytes.Buffer
	tinygguf.Write(&b, tinygguf.DefaultOptions())
	f.Add(b.Bytes()[:4096])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Whatever the bytes, the check answers without panicking or
		// allocating beyond the input's size.
		checkGGUF(bufio.NewReader(bytes.NewReader(data)), uint64(len(data)))
	})
}

func content(cc *llm.ChatCompletion) string {
	if len(cc.Choices) == 0 || cc.Choices[0].Message.Content == nil {
		return ""
	}
	return *cc.Choices[0].Message.Content
}

// TestRecreateOnChange: a model whose GGUF file or quantization changed
// is created again on the next start; an unchanged one is reused.
func TestRecreateOnChange(t *testing.T) {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	level := func(quantize string) string {
		cfg := DefaultConfig()
		cfg.Enabled, cfg.Binary, cfg.DataDir = true, bin, filepath.Join(dir, "ollama")
		cfg.Models = []Model{{Name: "tiny", GGUF: tiny, Quantize: quantize}}
		e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		e.Start()
		defer e.Stop()
		wait.For(t, 2*time.Minute, "the model to load", func() bool { ok, _ := e.Ready(); return ok })
		u, _ := url.Parse(e.URL())
		show, err := api.NewClient(u, http.DefaultClient).Show(context.Background(), &api.ShowRequest{Model: "tiny"})
		if err != nil {
			t.Fatal(err)
		}
		return show.Details.QuantizationLevel
	}
	if got := level("q8_0"); got != "Q8_0" {
		t.Fatalf("first start: %s", got)
	}
	if got := level(""); got != "F16" {
		t.Fatalf("after dropping quantize: %s, want the model created again as F16", got)
	}
	if got := level(""); got != "F16" {
		t.Fatalf("unchanged: %s", got)
	}
}

// TestReapOrphans: an edge killed without cleaning up leaves its Ollama's
// group running; the next start kills it, and only if it runs Ollama.
func TestReapOrphans(t *testing.T) {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	startGroup := func(name string, args ...string) int {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "OLLAMA_MODELS="+filepath.Join(dir, "models"), "OLLAMA_HOST=127.0.0.1:0")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return cmd.Process.Pid
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	record := func(pgid int) { os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(pgid)), 0o600) }

	other := startGroup("sleep", "60")
	record(other)
	reapOrphans(dir, log)
	if len(GroupMembers(other)) == 0 {
		t.Fatal("a group that runs no Ollama was killed")
	}

	orphan := startGroup(bin, "serve")
	record(orphan)
	reapOrphans(dir, log)
	wait.For(t, 10*time.Second, "the orphaned Ollama to die", func() bool { return len(GroupMembers(orphan)) == 0 })
}
