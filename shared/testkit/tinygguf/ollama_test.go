//go:build unix

package tinygguf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// The real-Ollama check: bin/ollama (built by `make ollama`) creates the
// model from the GGUF unquantized and quantized, and chats with it.

// chatPrompt ends the ChatML prompt with "<|im_start|>assistant\n"; the
// last token is the newline byte, which leads to 'a'.
const chatPrompt = "hello"

// predict is num_predict for the chat checks: enough to pass "z", the
// space and wrap around, and to bring repeat_penalty into play.
const predict = 60

// ollamaServer is a `bin/ollama serve` in its own process group, with its
// own HOME and models folder, on a loopback port of its choosing.
type ollamaServer struct {
	url  string
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	t.Fatal("no go.mod above the test's directory")
	return ""
}

var listening = regexp.MustCompile(`Listening on (127\.0\.0\.1:[0-9]+)`)

func startOllama(t *testing.T) *ollamaServer {
	t.Helper()
	bin := filepath.Join(repoRoot(t), "bin", "ollama")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("skipping the real-Ollama check: %s is missing (build it with `make ollama`)", bin)
	}
	home := t.TempDir()
	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"OLLAMA_MODELS=" + filepath.Join(home, "models"),
		"OLLAMA_HOST=127.0.0.1:0",
		"GGML_NO_BACKTRACE=1",
		"OLLAMA_NOPRUNE=1",
	}
	// Runners are children of the server; killing the group reaps them too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &ollamaServer{logs: &syncBuffer{}}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.logs, line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-scanned
		cmd.Wait()
		if t.Failed() {
			t.Logf("ollama serve log:\n%s", s.logs)
		}
	})
	select {
	case a := <-addr:
		s.url = "http://" + a
	case <-scanned:
		t.Fatalf("ollama serve exited before listening:\n%s", s.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("ollama serve did not log its address within 60s:\n%s", s.logs)
	}
	return s
}

// upload stores a GGUF as a blob and returns its digest.
func upload(ctx context.Context, t *testing.T, c *api.Client, opt Options) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, opt); err != nil {
		t.Fatal(err)
	}
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(b.Bytes()))
	if err := c.CreateBlob(ctx, digest, bytes.NewReader(b.Bytes())); err != nil {
		t.Fatalf("CreateBlob: %v", err)
	}
	return digest
}

func create(ctx context.Context, t *testing.T, c *api.Client, name, digest, quantize string) time.Duration {
	t.Helper()
	start := time.Now()
	req := &api.CreateRequest{Model: name, Files: map[string]string{"tiny.gguf": digest}, Quantize: quantize}
	var last string
	err := c.Create(ctx, req, func(p api.ProgressResponse) error {
		last = p.Status
		return nil
	})
	if err != nil {
		t.Fatalf("create %s (quantize %q): %v", name, quantize, err)
	}
	if last != "success" {
		t.Fatalf("create %s: last status %q", name, last)
	}
	return time.Since(start)
}

func chatOptions() map[string]any {
	return map[string]any{"num_predict": predict, "num_thread": 1}
}

func chat(ctx context.Context, t *testing.T, c *api.Client, model string, stream bool) (text string, firstToken time.Duration, last api.ChatResponse) {
	t.Helper()
	start := time.Now()
	req := &api.ChatRequest{
		Model:    model,
		Messages: []api.Message{{Role: "user", Content: chatPrompt}},
		Stream:   &stream,
		Options:  chatOptions(),
	}
	var sb strings.Builder
	err := c.Chat(ctx, req, func(r api.ChatResponse) error {
		if firstToken == 0 && r.Message.Content != "" {
			firstToken = time.Since(start)
		}
		sb.WriteString(r.Message.Content)
		last = r
		return nil
	})
	if err != nil {
		t.Fatalf("chat %s (stream %v): %v", model, stream, err)
	}
	return sb.String(), firstToken, last
}

func TestOllama(t *testing.T) {
	srv := startOllama(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := api.NewClient(mustURL(t, srv.url), http.DefaultClient)
	if v, err := c.Version(ctx); err != nil {
		t.Fatalf("version: %v", err)
	} else {
		t.Logf("ollama %s at %s", v, srv.url)
	}

	chain := DefaultOptions()
	repeat := DefaultOptions()
	repeat.Variant = VariantRepeat
	chainDigest := upload(ctx, t, c, chain)
	repeatDigest := upload(ctx, t, c, repeat)

	want := Expected(VariantChain, '\n', predict)
	for _, q := range []string{"", "q8_0", "q4_K_M"} {
		name := "tiny-f16"
		if q != "" {
			name = "tiny-" + strings.ToLower(q)
		}
		t.Run(name, func(t *testing.T) {
			took := create(ctx, t, c, name, chainDigest, q)
			show, err := c.Show(ctx, &api.ShowRequest{Model: name})
			if err != nil {
				t.Fatalf("show: %v", err)
			}
			t.Logf("create %s: %v (quantization %s, template %.40q)", name, took.Round(time.Millisecond), show.Details.QuantizationLevel, show.Template)

			text, first, last := chat(ctx, t, c, name, false)
			t.Logf("non-stream chat: %q (reply after %v, load %v, %d tokens, done_reason %q)",
				text, first.Round(time.Millisecond), last.LoadDuration.Round(time.Millisecond), last.EvalCount, last.DoneReason)
			if text != want || !last.Done || last.DoneReason != "length" {
				t.Errorf("non-stream chat = %q (done %v, %q), want %q ending on length", text, last.Done, last.DoneReason, want)
			}
			text, first, last = chat(ctx, t, c, name, true)
			t.Logf("stream chat: first token after %v", first.Round(time.Millisecond))
			if text != want || !last.Done {
				t.Errorf("stream chat = %q (done %v), want %q", text, last.Done, want)
			}
		})
	}

	t.Run("generate-raw", func(t *testing.T) {
		// A raw prompt skips the template: generation continues from the
		// prompt's own last byte.
		stream := false
		var got string
		err := c.Generate(ctx, &api.GenerateRequest{Model: "tiny-f16", Prompt: "hello", Raw: true, Stream: &stream, Options: chatOptions()},
			func(r api.GenerateResponse) error { got += r.Response; return nil })
		if err != nil {
			t.Fatalf("generate: %v", err)
		}
		if want := Expected(VariantChain, 'o', predict); got != want {
			t.Errorf("raw generate after %q = %q, want %q", "hello", got, want)
		}
	})

	t.Run("embed", func(t *testing.T) {
		for _, tc := range []struct {
			model string
			min   float64 // least cosine similarity with Embedding
		}{{"tiny-f16", 0.9999}, {"tiny-q8_0", 0.999}, {"tiny-q4_k_m", 0.99}} {
			texts := []string{"hello world", "a different sentence", "another word"}
			res, err := c.Embed(ctx, &api.EmbedRequest{Model: tc.model, Input: texts})
			if err != nil {
				t.Fatalf("embed %s: %v", tc.model, err)
			}
			if len(res.Embeddings) != len(texts) {
				t.Fatalf("embed %s: %d vectors for %d texts", tc.model, len(res.Embeddings), len(texts))
			}
			for i, text := range texts {
				cos := cosine(res.Embeddings[i], Embedding(DefaultOptions(), text))
				if cos < tc.min {
					t.Errorf("embed %s %q: cosine with Embedding %.5f, want >= %v", tc.model, text, cos, tc.min)
				}
				t.Logf("embed %s %q: cosine with Embedding %.6f", tc.model, text, cos)
			}
			t.Logf("embed %s: %d vectors of %d dims; texts ending in the same byte agree (cosine %.5f)", tc.model,
				len(res.Embeddings), len(res.Embeddings[0]), cosine(res.Embeddings[0], res.Embeddings[2]))
		}
	})

	t.Run("repeat", func(t *testing.T) {
		create(ctx, t, c, "tiny-repeat", repeatDigest, "")
		body, _ := json.Marshal(map[string]any{
			"model":    "tiny-repeat",
			"messages": []map[string]string{{"role": "user", "content": chatPrompt}},
			"options":  map[string]any{"num_predict": 64, "num_thread": 1},
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/api/chat", bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		t.Logf("repeat variant: HTTP %d, Content-Type %q, Transfer-Encoding %q, %d bytes, ends %q, raw NDJSON:\n%s",
			resp.StatusCode, resp.Header.Get("Content-Type"), resp.TransferEncoding, len(raw), raw[max(0, len(raw)-20):], raw)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var lines, content int
		for line := range bytes.Lines(raw) {
			var r api.ChatResponse
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			lines++
			if r.Message.Content != "" {
				content++
			}
			if r.Done {
				t.Errorf("the stream ended with done:true: %s", line)
			}
		}
		// Ollama forwards the first piece and 30 repeats of it, then drops
		// the stream when the 31st repeat arrives.
		if content != 31 || lines != 31 {
			t.Errorf("%d lines (%d with content) before the stream ended, want 31", lines, content)
		}
	})
}

func cosine(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
