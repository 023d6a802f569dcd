package node

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// startLocalMesh starts an edge that runs a real Ollama with the tiny
// model ("tiny") and its repeating variant ("repeat"), beside the mocks
// of startMesh. "tiny-or-mock" tries the local model first and the mock
// second.
func startLocalMesh(t *testing.T, edit func(*config.Config)) *testMesh {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	repeat := enginetest.Model(t, dir, "repeat", tinygguf.VariantRepeat)
	return startMesh(t, func(c *config.Config) {
		c.Local = engine.DefaultConfig()
		c.Local.Enabled = true
		c.Local.Binary = bin
		c.Local.DataDir = filepath.Join(dir, "ollama")
		c.Local.NumThread = 1
		c.Local.Models = []engine.Model{
			{Name: "tiny", GGUF: tiny, Quantize: "q8_0"},
			{Name: "repeat", GGUF: repeat},
		}
		c.Table.Models = append(c.Table.Models, table.Model{ID: "tiny-or-mock"})
		c.Table.Routes = append(c.Table.Routes, &table.Route{Model: "tiny-or-mock",
			Targets: []table.Target{{Provider: "local", Model: "tiny"}, {Provider: "mock", Model: "gpt-4o-mini"}}})
		if edit != nil {
			edit(c)
		}
	})
}

func getReadiness(t *testing.T, url string) (int, Readiness) {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, rd
}

func TestLocalModels(t *testing.T) {
	m := startLocalMesh(t, nil)
	client := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	ctx := context.Background()

	t.Run("readiness lists the local models", func(t *testing.T) {
		code, rd := getReadiness(t, m.url)
		if code != 200 || rd.Local == nil || !rd.Local.Up || rd.Local.Models["tiny"].State != engine.StateReady || len(rd.Local.NotReady) != 0 {
			t.Fatalf("readyz %d %+v", code, rd.Local)
		}
	})

	t.Run("openai-go chat", func(t *testing.T) {
		var raw *http.Response
		cc, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     "tiny",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
			MaxTokens: openai.Int(20),
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := cc.Choices[0].Message.Content; got != enginetest.Expected(20) {
			t.Fatalf("content %q, want %q", got, enginetest.Expected(20))
		}
		if cc.Choices[0].FinishReason != "length" || cc.Usage.CompletionTokens != 20 || cc.Usage.PromptTokens == 0 {
			t.Fatalf("finish %q usage %+v", cc.Choices[0].FinishReason, cc.Usage)
		}
		if route := raw.Header.Get("X-Meridian-Route"); !strings.Contains(route, "target=local;") {
			t.Fatalf("route %q", route)
		}
	})

	t.Run("openai-go chat streamed", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "tiny",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
			MaxTokens:     openai.Int(30),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != enginetest.Expected(30) || chunks < 30 {
			t.Fatalf("streamed %q in %d chunks", got, chunks)
		}
		if acc.Usage.CompletionTokens != 30 {
			t.Fatalf("usage %+v", acc.Usage)
		}
	})

	t.Run("openai-go legacy completions", func(t *testing.T) {
		// Ollama's /v1/completions wraps the prompt in the model's
		// template, so the tiny model answers as it does in chat.
		want := enginetest.Expected(10)
		c, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")}, MaxTokens: openai.Int(10),
		})
		if err != nil {
			t.Fatal(err)
		}
		if c.Choices[0].Text != want || c.Usage.CompletionTokens != 10 {
			t.Fatalf("completion %q usage %+v, want %q", c.Choices[0].Text, c.Usage, want)
		}
		stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")}, MaxTokens: openai.Int(10),
		})
		var sb strings.Builder
		for stream.Next() {
			for _, ch := range stream.Current().Choices {
				sb.WriteString(ch.Text)
			}
		}
		if err := stream.Err(); err != nil || sb.String() != want {
			t.Fatalf("streamed completion %q, %v", sb.String(), err)
		}
	})

	t.Run("openai-go embeddings", func(t *testing.T) {
		emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "tiny",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"abc", "xyz"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(emb.Data) != 2 || len(emb.Data[0].Embedding) != tinygguf.DefaultOptions().Embedding {
			t.Fatalf("embeddings: %d vectors of %d", len(emb.Data), len(emb.Data[0].Embedding))
		}
		want := tinygguf.Embedding(tinygguf.DefaultOptions(), "abc")
		for i, v := range emb.Data[0].Embedding {
			if d := float32(v) - want[i]; d > 1e-3 || d < -1e-3 {
				t.Fatalf("embedding[%d] = %v, want %v", i, v, want[i])
			}
		}
	})

	t.Run("anthropic surface", func(t *testing.T) {
		resp := m.post("/v1/messages", `{"model":"tiny","max_tokens":12,"messages":[{"role":"user","content":"hello"}]}`,
			"anthropic-version", "2023-06-01")
		var msg struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
			StopReason string `json:"stop_reason"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != enginetest.Expected(12) || msg.StopReason != "max_tokens" {
			t.Fatalf("message %+v", msg)
		}
	})

	t.Run("a stream ended without done reaches the client as an error", func(t *testing.T) {
		// Ollama ends the repeat model's stream after 30 identical
		// tokens with HTTP 200 and no done line.
		resp := m.post("/v1/chat/completions", chatBody("repeat", "hello", `"stream":true,"max_tokens":200`))
		evs := dataEvents(mustEvents(t, resp))
		if len(evs) < 2 {
			t.Fatalf("events %q", evs)
		}
		last := evs[len(evs)-1]
		if !strings.Contains(last, `"error"`) || !strings.Contains(last, "stream_interrupted") {
			t.Fatalf("last event %q, want an error event", last)
		}
		for _, e := range evs {
			if e == "[DONE]" {
				t.Fatal("a cut stream must not end with [DONE]")
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(m.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b := string(readBody(t, resp))
		for _, want := range []string{`meridian_local_up 1`, `meridian_local_model_ready{model="tiny"} 1`, `meridian_local_queue_depth 0`, `meridian_local_tokens_per_second `} {
			if !strings.Contains(b, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
}

func mustEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	evs, err := readEvents(t, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestLocalQueueFailover fills the local engine (one slot, no queue) and
// checks that the next request fails over to the route's next target.
func TestLocalQueueFailover(t *testing.T) {
	m := startLocalMesh(t, func(c *config.Config) { c.Local.NumParallel, c.Local.Queue = 1, 0 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.url+"/v1/chat/completions",
			strings.NewReader(chatBody("tiny", "hello", `"stream":true,"max_tokens":1000000`)))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			readEvents(t, resp.Body)
			resp.Body.Close()
		}
	}()
	m.waitFor("the local slot to fill", func() bool { return m.node.engine.Stats().Running == 1 })

	resp := m.post("/v1/chat/completions", chatBody("tiny-or-mock", "hello", ""))
	b := readBody(t, resp)
	route := resp.Header.Get("X-Meridian-Route")
	if resp.StatusCode != 200 || !strings.Contains(route, "target=provider/mock") || !strings.Contains(route, "failed=local(queue-full)") {
		t.Fatalf("status %d route %q: %s", resp.StatusCode, route, b)
	}
	// The dry run shows why, with the engine's load.
	pr, err := http.Get(m.url + "/v1/meridian/route?model=tiny-or-mock")
	if err != nil {
		t.Fatal(err)
	}
	var plan struct {
		Targets []struct {
			Target  string `json:"target"`
			Skipped string `json:"skipped"`
			Load    *struct {
				Up       bool `json:"up"`
				Running  int  `json:"running"`
				Capacity int  `json:"capacity"`
			} `json:"load"`
		} `json:"targets"`
	}
	json.NewDecoder(pr.Body).Decode(&plan)
	pr.Body.Close()
	if len(plan.Targets) != 2 || plan.Targets[0].Skipped != "queue-full" || plan.Targets[0].Load == nil ||
		!plan.Targets[0].Load.Up || plan.Targets[0].Load.Running != 1 || plan.Targets[0].Load.Capacity != 1 {
		t.Fatalf("plan %+v", plan)
	}
	// Without a second target the client sees the 429 and when to retry.
	resp = m.post("/v1/chat/completions", chatBody("tiny", "hello", ""))
	if b := readBody(t, resp); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	cancel()
	wg.Wait()
}

// TestLocalNotReady: an edge whose engine cannot start says why in
// /readyz, names the models that are not ready, and keeps serving its
// other routes.
func TestLocalNotReady(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *config.Config) {
		c.Local = engine.DefaultConfig()
		c.Local.Enabled = true
		c.Local.Binary = "false" // starts, and exits at once
		c.Local.DataDir = filepath.Join(dir, "ollama")
		c.Local.RestartBackoff = 50 * time.Millisecond
		c.Local.Models = []engine.Model{{Name: "tiny", GGUF: filepath.Join(dir, "tiny.gguf")}}
	}
	m := startMeshUnready(t, cfg)
	code, rd := getReadiness(t, m.url)
	if code != 503 || rd.Ready || rd.Local == nil || rd.Local.Up || strings.Join(rd.Local.NotReady, ",") != "tiny" || !strings.Contains(rd.Reason, "local engine") {
		t.Fatalf("readyz %d %+v local %+v", code, rd, rd.Local)
	}
	resp := m.post("/v1/chat/completions", chatBody("tiny", "hello", ""))
	if b := readBody(t, resp); resp.StatusCode != 503 || decodeError(t, b).Error.Type == "" {
		t.Fatalf("request to the local model: %d %s", resp.StatusCode, b)
	}
	resp = m.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hello", ""))
	if resp.StatusCode != 200 {
		t.Fatalf("other routes: %d", resp.StatusCode)
	}
}

func TestLocalMissingBinary(t *testing.T) {
	cfg := config.DefaultConfig()
	cfg.Local = engine.DefaultConfig()
	cfg.Local.Enabled, cfg.Local.Binary = true, filepath.Join(t.TempDir(), "no-such-ollama")
	_, err := New(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "local.binary") || !strings.Contains(err.Error(), "make ollama") {
		t.Fatalf("err = %v, want one naming local.binary", err)
	}
}
