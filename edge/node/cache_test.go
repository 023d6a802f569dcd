package node

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

func withCache(c *config.Config) { c.Cache.MaxBytes = 16 << 20 }

// TestCacheThroughSDKs serves the same deterministic question twice
// through each official Go SDK, plain and streamed: the second answer
// comes from the cache, is what the first was, chunk for chunk, and its
// usage says the prompt was cached; the provider saw each question once.
func TestCacheThroughSDKs(t *testing.T) {
	m := startMesh(t, withCache)
	ctx := context.Background()
	oc := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	ac := anthropic.NewClient(aoption.WithBaseURL(m.url), aoption.WithAPIKey("sk-unused"), aoption.WithMaxRetries(0))
	const question = "what is the capital of France? #mock chunks=9"
	params := openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(question)},
		Temperature: openai.Float(0), MaxTokens: openai.Int(64),
	}

	t.Run("openai plain", func(t *testing.T) {
		before := len(m.mock.Requests())
		var first, second *http.Response
		a, err := oc.Chat.Completions.New(ctx, params, option.WithResponseInto(&first))
		if err != nil {
			t.Fatal(err)
		}
		b, err := oc.Chat.Completions.New(ctx, params, option.WithResponseInto(&second))
		if err != nil {
			t.Fatal(err)
		}
		if first.Header.Get("X-Meridian-Cache") != "miss" || second.Header.Get("X-Meridian-Cache") != "hit" {
			t.Fatalf("x-meridian-cache: %q then %q", first.Header.Get("X-Meridian-Cache"), second.Header.Get("X-Meridian-Cache"))
		}
		if b.Choices[0].Message.Content != a.Choices[0].Message.Content || a.Choices[0].Message.Content != providermock.Content(9) {
			t.Fatalf("hit %q, miss %q", b.Choices[0].Message.Content, a.Choices[0].Message.Content)
		}
		if b.Usage.PromptTokensDetails.CachedTokens != b.Usage.PromptTokens || b.Usage.PromptTokens == 0 || a.Usage.PromptTokensDetails.CachedTokens != 0 {
			t.Fatalf("usage: miss %+v, hit %+v", a.Usage, b.Usage)
		}
		if n := len(m.mock.Requests()) - before; n != 1 {
			t.Fatalf("the provider saw %d requests, want 1", n)
		}
	})

	// Anthropic's SDK asks the same question (same system, prompt and
	// parameters) and gets the OpenAI client's cached answer.
	t.Run("anthropic plain, shared entry", func(t *testing.T) {
		before := len(m.mock.Requests())
		var resp *http.Response
		msg, err := ac.Messages.New(ctx, anthropic.MessageNewParams{Model: "gpt-4o-mini", MaxTokens: 64, Messages: user(question)},
			aoption.WithJSONSet("temperature", 0),
			aoption.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("X-Meridian-Cache") != "hit" || len(msg.Content) != 1 || msg.Content[0].Text != providermock.Content(9) {
			t.Fatalf("%q: %+v", resp.Header.Get("X-Meridian-Cache"), msg)
		}
		if msg.Usage.CacheReadInputTokens == 0 || msg.Usage.InputTokens != 0 {
			t.Fatalf("usage %+v", msg.Usage)
		}
		if n := len(m.mock.Requests()) - before; n != 0 {
			t.Fatalf("the provider saw %d requests, want 0", n)
		}
	})

	t.Run("openai stream", func(t *testing.T) {
		before := len(m.mock.Requests())
		sp := params
		sp.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		run := func() ([]string, openai.CompletionUsage, string) {
			var resp *http.Response
			s := oc.Chat.Completions.NewStreaming(ctx, sp, option.WithResponseInto(&resp))
			var deltas []string
			var u openai.CompletionUsage
			for s.Next() {
				c := s.Current()
				if len(c.Choices) > 0 {
					deltas = append(deltas, c.Choices[0].Delta.Content)
				}
				if c.Usage.TotalTokens > 0 {
					u = c.Usage
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			return deltas, u, resp.Header.Get("X-Meridian-Cache")
		}
		d1, u1, s1 := run()
		d2, u2, s2 := run()
		if s1 != "miss" || s2 != "hit" {
			t.Fatalf("x-meridian-cache: %q then %q", s1, s2)
		}
		if strings.Join(d1, "") != providermock.Content(9) || strings.Join(d2, "\x00") != strings.Join(d1, "\x00") {
			t.Fatalf("replay %q, original %q", d2, d1)
		}
		if u2.PromptTokensDetails.CachedTokens != u1.PromptTokens || u2.CompletionTokens != u1.CompletionTokens || u1.PromptTokensDetails.CachedTokens != 0 {
			t.Fatalf("usage: miss %+v, hit %+v", u1, u2)
		}
		if n := len(m.mock.Requests()) - before; n != 1 {
			t.Fatalf("the provider saw %d requests, want 1", n)
		}
	})

	t.Run("anthropic stream, shared entry", func(t *testing.T) {
		before := len(m.mock.Requests())
		var resp *http.Response
		s := ac.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: "gpt-4o-mini", MaxTokens: 64, Messages: user(question)},
			aoption.WithJSONSet("temperature", 0),
			aoption.WithResponseInto(&resp))
		var msg anthropic.Message
		var deltas int
		for s.Next() {
			ev := s.Current()
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "content_block_delta" {
				deltas++
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("X-Meridian-Cache") != "hit" || len(msg.Content) != 1 || msg.Content[0].Text != providermock.Content(9) || deltas != 9 {
			t.Fatalf("%q, %d deltas: %+v", resp.Header.Get("X-Meridian-Cache"), deltas, msg)
		}
		if msg.Usage.CacheReadInputTokens == 0 || msg.Usage.OutputTokens == 0 {
			t.Fatalf("usage %+v", msg.Usage)
		}
		if n := len(m.mock.Requests()) - before; n != 0 {
			t.Fatalf("the provider saw %d requests, want 0", n)
		}
	})

	// The dry run says whether a request would hit, and sends nothing.
	t.Run("dry run", func(t *testing.T) {
		before := len(m.mock.Requests())
		body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 64,
			"messages": []map[string]string{{"role": "user", "content": question}}})
		for _, c := range []struct{ body, cc, want string }{
			{string(body), "", "hit"},
			{strings.Replace(string(body), "France", "Spain", 1), "", "miss"},
			{string(body), "no-store", "bypass"},
			{strings.Replace(string(body), `"temperature":0`, `"temperature":1`, 1), "", "bypass"},
		} {
			req, _ := http.NewRequest(http.MethodPost, m.url+"/v1/meridian/route", strings.NewReader(c.body))
			if c.cc != "" {
				req.Header.Set("Cache-Control", c.cc)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readBody(t, resp)
			var p struct {
				Targets []struct{ Target string } `json:"targets"`
				Cache   struct{ Status, Reason, Key string }
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &p) != nil || p.Cache.Status != c.want || len(p.Targets) == 0 {
				t.Fatalf("want %s: %d %s", c.want, resp.StatusCode, b)
			}
			if c.want == "bypass" && p.Cache.Reason == "" {
				t.Fatalf("a bypass without a reason: %s", b)
			}
		}
		if n := len(m.mock.Requests()) - before; n != 0 {
			t.Fatalf("a dry run reached the provider %d times", n)
		}
	})
}

// TestSemanticCacheWithTheEngine runs the semantic cache on the edge's
// own engine: the tiny model embeds the last user turns (by their last
// byte, so this proves the path, not an embedding model's judgement;
// see edge/api/testdata/semantic_cache.json). A paraphrase is answered
// from the cache with its similarity; another question is not.
func TestSemanticCacheWithTheEngine(t *testing.T) {
	m := startLocalMesh(t, func(c *config.Config) {
		withCache(c)
		c.Cache.SemanticModel = "tiny"
		for i := range c.Table.Routes {
			if c.Table.Routes[i].Model == "gpt-4o-mini" {
				c.Table.Routes[i].Cache.Similarity = 0.9
			}
		}
	})
	m.waitFor("tiny ready", func() bool {
		_, rd := getReadiness(t, m.url)
		return rd.Local != nil && rd.Local.Models["tiny"].State == "ready"
	})
	ask := func(q string) *http.Response {
		body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 32,
			"messages": []map[string]string{{"role": "system", "content": "You are Acme's support assistant."}, {"role": "user", "content": q}}})
		resp := m.post("/v1/chat/completions", string(body))
		if resp.StatusCode != 200 {
			t.Fatalf("%q: %d %s", q, resp.StatusCode, readBody(t, resp))
		}
		return resp
	}
	before := len(m.mock.Requests())
	if r := ask("How do I reset my password?"); r.Header.Get("X-Meridian-Cache") != "miss" {
		t.Fatalf("first: %q", r.Header.Get("X-Meridian-Cache"))
	}
	r := ask("how can i reset my password?")
	sim, err := strconv.ParseFloat(r.Header.Get("X-Meridian-Cache-Similarity"), 64)
	if r.Header.Get("X-Meridian-Cache") != "hit" || err != nil || sim < 0.9 {
		t.Fatalf("paraphrase: %q, similarity %q", r.Header.Get("X-Meridian-Cache"), r.Header.Get("X-Meridian-Cache-Similarity"))
	}
	if r := ask("How do I delete my account"); r.Header.Get("X-Meridian-Cache") != "miss" || r.Header.Get("X-Meridian-Cache-Similarity") != "" {
		t.Fatalf("another question: %q %q", r.Header.Get("X-Meridian-Cache"), r.Header.Get("X-Meridian-Cache-Similarity"))
	}
	if n := len(m.mock.Requests()) - before; n != 2 {
		t.Fatalf("the provider saw %d requests, want 2", n)
	}
}

// TestNodeSDKsCache runs scripts/sdktest/node/cache.test.mjs, the
// official Node SDKs against an edge with its cache on; see
// TestNodeSDKs for when it skips.
func TestNodeSDKsCache(t *testing.T) {
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeSDKDir, "node_modules", "openai"))
	}
	if err != nil {
		msg := "the Node SDK tests need node and `npm ci` in scripts/sdktest/node: " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	m := startMesh(t, withCache)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "cache.test.mjs")
	cmd.Dir = nodeSDKDir
	cmd.Env = append(os.Environ(), "MERIDIAN_URL="+m.url, "MERIDIAN_CACHE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "pass 2") || !strings.Contains(string(out), "fail 0") {
		t.Fatalf("node --test reported failures or skips:\n%s", out)
	}
}

// An Anthropic client of an Anthropic upstream gets the upstream's own
// answer, passed through; the cache keeps it in that format, serves it
// to Anthropic clients with the usage marked, and never to an OpenAI
// client, whose miss stores an answer both formats read.
func TestCacheNativeAnthropic(t *testing.T) {
	m := startMesh(t, withCache)
	ctx := context.Background()
	ac := anthropic.NewClient(aoption.WithBaseURL(m.url), aoption.WithAPIKey("sk-unused"), aoption.WithMaxRetries(0))
	oc := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	const q = "native cache question #mock chunks=5"
	params := anthropic.MessageNewParams{Model: "claude-mock", MaxTokens: 64, Messages: user(q)}
	temp0 := aoption.WithJSONSet("temperature", 0)

	plain := func() (*anthropic.Message, string) {
		var resp *http.Response
		msg, err := ac.Messages.New(ctx, params, temp0, aoption.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		return msg, resp.Header.Get("X-Meridian-Cache")
	}
	a, s1 := plain()
	b, s2 := plain()
	if s1 != "miss" || s2 != "hit" || len(b.Content) != 1 || b.Content[0].Text != a.Content[0].Text || b.ID != a.ID {
		t.Fatalf("plain: %q then %q: %+v vs %+v", s1, s2, a, b)
	}
	if b.Usage.InputTokens != 0 || b.Usage.CacheReadInputTokens != a.Usage.InputTokens || a.Usage.InputTokens == 0 || b.Usage.OutputTokens != a.Usage.OutputTokens {
		t.Fatalf("usage: miss %+v, hit %+v", a.Usage, b.Usage)
	}

	stream := func() ([]string, anthropic.Message, string) {
		var resp *http.Response
		s := ac.Messages.NewStreaming(ctx, params, temp0, aoption.WithResponseInto(&resp))
		var msg anthropic.Message
		var deltas []string
		for s.Next() {
			ev := s.Current()
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "content_block_delta" {
				deltas = append(deltas, ev.Delta.Text)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return deltas, msg, resp.Header.Get("X-Meridian-Cache")
	}
	d1, m1, s1 := stream()
	d2, m2, s2 := stream()
	if s1 != "miss" || s2 != "hit" || strings.Join(d1, "\x00") != strings.Join(d2, "\x00") || len(d1) != 5 {
		t.Fatalf("stream: %q then %q: %q vs %q", s1, s2, d1, d2)
	}
	if m2.Usage.InputTokens != 0 || m2.Usage.CacheReadInputTokens == 0 || m2.Usage.OutputTokens != m1.Usage.OutputTokens || m1.Usage.CacheReadInputTokens != 0 {
		t.Fatalf("stream usage: miss %+v, hit %+v", m1.Usage, m2.Usage)
	}

	// The OpenAI client cannot read the native entry: a miss, whose
	// answer then serves the Anthropic client too.
	op := openai.ChatCompletionNewParams{Model: "claude-mock", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(q)},
		Temperature: openai.Float(0), MaxTokens: openai.Int(64)}
	var r1, r2 *http.Response
	if _, err := oc.Chat.Completions.New(ctx, op, option.WithResponseInto(&r1)); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Chat.Completions.New(ctx, op, option.WithResponseInto(&r2)); err != nil {
		t.Fatal(err)
	}
	if r1.Header.Get("X-Meridian-Cache") != "miss" || r2.Header.Get("X-Meridian-Cache") != "hit" {
		t.Fatalf("openai client: %q then %q", r1.Header.Get("X-Meridian-Cache"), r2.Header.Get("X-Meridian-Cache"))
	}
	if c, s := plain(); s != "hit" || c.Content[0].Text != a.Content[0].Text || c.Usage.CacheReadInputTokens == 0 {
		t.Fatalf("anthropic after the openai answer: %q %+v", s, c)
	}
}
