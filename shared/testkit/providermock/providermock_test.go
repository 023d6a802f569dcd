package providermock

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, base
}

func doJSON(t *testing.T, ctx context.Context, method, url string, body any, hdr map[string]string) *http.Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func post(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	return doJSON(t, context.Background(), http.MethodPost, url, body, nil)
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func decodeBody(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	b := readAll(t, resp)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// readEvents reads SSE data payloads until the body ends; it returns the
// payloads and the read error (nil at a clean EOF).
func readEvents(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") && strings.HasSuffix(line, "\n") {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(line, "data: "), "\n"))
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func chatBody(text string, extra map[string]any) map[string]any {
	m := map[string]any{
		"model": "gpt-4o-mini",
		"messages": []map[string]any{
			{"role": "system", "content": "be brief"},
			{"role": "user", "content": text},
		},
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

type chatCompletion struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      *string `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func TestNewKinds(t *testing.T) {
	if _, err := New(Config{Kind: "anthropic-ish"}); err == nil {
		t.Fatal("New accepted an unknown kind")
	}
	for _, k := range []string{"", "openai"} {
		if _, err := New(Config{Kind: k}); err != nil {
			t.Fatalf("New(%q): %v", k, err)
		}
	}
	if d := DefaultConfig(); d.Kind != KindOpenAI || d.Chunks != 16 {
		t.Fatalf("DefaultConfig = %+v", d)
	}
}

func TestChatPlain(t *testing.T) {
	s, base := startServer(t, Config{})
	resp := post(t, base+"/v1/chat/completions", chatBody("say hello to me", map[string]any{"n": 2}))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var c chatCompletion
	decodeBody(t, resp, &c)
	if !strings.HasPrefix(c.ID, "chatcmpl-") || c.Object != "chat.completion" || c.Model != "gpt-4o-mini" || c.Created == 0 || c.SystemFingerprint == "" {
		t.Fatalf("bad head: %+v", c)
	}
	if len(c.Choices) != 2 {
		t.Fatalf("want 2 choices, got %d", len(c.Choices))
	}
	want := Content(16)
	for i, ch := range c.Choices {
		if ch.Index != i || ch.Message.Role != "assistant" || ch.Message.Content == nil || *ch.Message.Content != want || ch.FinishReason != "stop" || string(ch.Logprobs) != "null" {
			t.Fatalf("choice %d: %+v", i, ch)
		}
	}
	if strings.Count(want, " ") != 15 || strings.HasPrefix(want, " ") {
		t.Fatalf("content %q is not 16 words", want)
	}
	// "be brief" + "say hello to me" = 6 words; 16 chunks × 2 choices.
	if c.Usage == nil || *c.Usage != (usage{6, 32, 38}) {
		t.Fatalf("usage %+v", c.Usage)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != "/v1/chat/completions" || !bytes.Contains(reqs[0].Body, []byte("say hello")) || reqs[0].Done.IsZero() || !reqs[0].Canceled.IsZero() {
		t.Fatalf("recorded %+v", reqs)
	}
	if reqs[0].Header.Get("Content-Type") != "application/json" {
		t.Fatalf("recorded header %v", reqs[0].Header)
	}
}

func TestChatContentParts(t *testing.T) {
	_, base := startServer(t, Config{})
	body := map[string]any{
		"model": "gpt-4o",
		"messages": []map[string]any{{"role": "user", "content": []map[string]any{
			{"type": "text", "text": "one two"},
			{"type": "image_url", "image_url": map[string]any{"url": "data:,"}},
			{"type": "text", "text": "three #mock chunks=3"},
		}}},
		"max_tokens": 100,
	}
	var c chatCompletion
	decodeBody(t, post(t, base+"/v1/chat/completions", body), &c)
	if got := *c.Choices[0].Message.Content; got != Content(3) {
		t.Fatalf("content %q", got)
	}
	if *c.Usage != (usage{5, 3, 8}) {
		t.Fatalf("usage %+v", c.Usage)
	}
}

func TestChatMaxTokens(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 10})
	var c chatCompletion
	decodeBody(t, post(t, base+"/v1/chat/completions", chatBody("hi", map[string]any{"max_tokens": 4})), &c)
	if c.Choices[0].FinishReason != "length" || *c.Choices[0].Message.Content != Content(4) || c.Usage.CompletionTokens != 4 {
		t.Fatalf("got %+v", c)
	}
}

func streamChat(t *testing.T, base string, body map[string]any) []chunk {
	t.Helper()
	resp := post(t, base+"/v1/chat/completions", body)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	evs, err := readEvents(resp.Body)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(evs) == 0 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", evs)
	}
	var out []chunk
	for _, e := range evs[:len(evs)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %s: %v", e, err)
		}
		out = append(out, c)
	}
	return out
}

func TestChatStream(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 5})
	for _, includeUsage := range []bool{false, true} {
		t.Run("include_usage="+strconv.FormatBool(includeUsage), func(t *testing.T) {
			extra := map[string]any{"stream": true}
			if includeUsage {
				extra["stream_options"] = map[string]any{"include_usage": true}
			}
			cs := streamChat(t, base, chatBody("hello there #mock chunks=7", extra))
			want := 1 + 7 + 1
			if includeUsage {
				want++
			}
			if len(cs) != want {
				t.Fatalf("want %d chunks, got %d", want, len(cs))
			}
			id := cs[0].ID
			var text strings.Builder
			for i, c := range cs {
				if c.ID != id || !strings.HasPrefix(id, "chatcmpl-") || c.Object != "chat.completion.chunk" || c.Model != "gpt-4o-mini" {
					t.Fatalf("chunk %d head: %+v", i, c)
				}
				if includeUsage != (c.Usage != nil) {
					t.Fatalf("chunk %d usage presence %q", i, c.Usage)
				}
				switch {
				case i == 0:
					d := c.Choices[0].Delta
					if d.Role == nil || *d.Role != "assistant" || d.Content == nil || *d.Content != "" || c.Choices[0].FinishReason != nil {
						t.Fatalf("first chunk: %+v", c)
					}
				case i <= 7:
					d := c.Choices[0].Delta
					if d.Role != nil || d.Content == nil || c.Choices[0].FinishReason != nil {
						t.Fatalf("content chunk %d: %+v", i, c)
					}
					text.WriteString(*d.Content)
				case i == 8:
					d := c.Choices[0].Delta
					if d.Role != nil || d.Content != nil || c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
						t.Fatalf("finish chunk: %+v", c)
					}
				default:
					var u usage
					if err := json.Unmarshal(c.Usage, &u); err != nil || len(c.Choices) != 0 || u != (usage{6, 7, 13}) {
						t.Fatalf("usage chunk: %+v (%v)", c, err)
					}
				}
				if includeUsage && i < 9 && string(c.Usage) != "null" {
					t.Fatalf("chunk %d usage %q, want null", i, c.Usage)
				}
			}
			if text.String() != Content(7) {
				t.Fatalf("content %q", text.String())
			}
		})
	}
}

func TestChatStreamN(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 3})
	cs := streamChat(t, base, chatBody("x", map[string]any{"stream": true, "n": 2}))
	texts := map[int]string{}
	finished := map[int]bool{}
	for _, c := range cs {
		ch := c.Choices[0]
		if ch.Delta.Content != nil {
			texts[ch.Index] += *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			finished[ch.Index] = true
		}
	}
	if texts[0] != Content(3) || texts[1] != Content(3) || !finished[0] || !finished[1] {
		t.Fatalf("texts %v finished %v", texts, finished)
	}
}

var weatherTools = []map[string]any{{
	"type": "function",
	"function": map[string]any{
		"name":       "get_weather",
		"parameters": map[string]any{"type": "object"},
	},
}}

func TestToolCallPlain(t *testing.T) {
	_, base := startServer(t, Config{})
	cases := map[string]map[string]any{
		"directive":   chatBody("weather? #mock tool_call=get_weather", map[string]any{"tools": weatherTools}),
		"tool_choice": chatBody("weather?", map[string]any{"tools": weatherTools, "tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}}}),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			var c chatCompletion
			decodeBody(t, post(t, base+"/v1/chat/completions", body), &c)
			ch := c.Choices[0]
			if ch.FinishReason != "tool_calls" || ch.Message.Content != nil || len(ch.Message.ToolCalls) != 1 {
				t.Fatalf("choice %+v", ch)
			}
			tc := ch.Message.ToolCalls[0]
			if !strings.HasPrefix(tc.ID, "call_") || tc.Type != "function" || tc.Function.Name != "get_weather" || tc.Function.Arguments != `{"location":"Paris"}` {
				t.Fatalf("tool call %+v", tc)
			}
		})
	}
	// Without tools in the request the directive is ignored.
	var c chatCompletion
	decodeBody(t, post(t, base+"/v1/chat/completions", chatBody("weather? #mock tool_call=get_weather", nil)), &c)
	if c.Choices[0].FinishReason != "stop" || len(c.Choices[0].Message.ToolCalls) != 0 {
		t.Fatalf("tool call without tools: %+v", c)
	}
}

func TestToolCallStream(t *testing.T) {
	_, base := startServer(t, Config{})
	cs := streamChat(t, base, chatBody("weather? #mock tool_call=get_weather", map[string]any{"tools": weatherTools, "stream": true}))
	if len(cs) < 4 {
		t.Fatalf("too few chunks: %d", len(cs))
	}
	first := cs[0].Choices[0].Delta
	if first.Role == nil || *first.Role != "assistant" || len(first.ToolCalls) != 1 {
		t.Fatalf("first chunk %+v", cs[0])
	}
	tc := first.ToolCalls[0]
	if tc.Index != 0 || !strings.HasPrefix(tc.ID, "call_") || tc.Type != "function" || tc.Function.Name != "get_weather" || tc.Function.Arguments != "" {
		t.Fatalf("first tool delta %+v", tc)
	}
	var args strings.Builder
	fragments := 0
	for _, c := range cs[1 : len(cs)-1] {
		d := c.Choices[0].Delta
		if len(d.ToolCalls) != 1 || d.ToolCalls[0].Index != 0 || d.ToolCalls[0].ID != "" || d.ToolCalls[0].Function.Name != "" {
			t.Fatalf("fragment chunk %+v", c)
		}
		args.WriteString(d.ToolCalls[0].Function.Arguments)
		fragments++
	}
	if fragments < 2 {
		t.Fatalf("arguments not split: %d fragments", fragments)
	}
	var parsed map[string]string
	if err := json.Unmarshal([]byte(args.String()), &parsed); err != nil || parsed["location"] != "Paris" {
		t.Fatalf("arguments %q: %v", args.String(), err)
	}
	last := cs[len(cs)-1].Choices[0]
	if last.FinishReason == nil || *last.FinishReason != "tool_calls" {
		t.Fatalf("last chunk %+v", last)
	}
}

func TestErrorStatuses(t *testing.T) {
	s, base := startServer(t, Config{})
	cases := []struct {
		name       string
		body       map[string]any
		status     int
		typ, code  string
		message    string
		retryAfter string
	}{
		{"400", chatBody("x #mock status=400", nil), 400, "invalid_request_error", "", "", ""},
		{"401", chatBody("x #mock status=401", nil), 401, "invalid_request_error", "invalid_api_key", "Incorrect API key", ""},
		{"429", chatBody("x #mock status=429 retry_after=7", nil), 429, "requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini", "7"},
		{"429 default retry", chatBody("x #mock status=429", nil), 429, "requests", "rate_limit_exceeded", "Rate limit reached", "1"},
		{"500", chatBody("x #mock status=500", nil), 500, "server_error", "", "", ""},
		{"503", chatBody("x #mock status=503 retry_after=3", nil), 503, "server_error", "", "The server is overloaded or not ready yet.", "3"},
		{"model 500", map[string]any{"model": "mock-error-500", "messages": []map[string]any{{"role": "user", "content": "x"}}}, 500, "server_error", "", "", ""},
		{"model 429", map[string]any{"model": "mock-error-429", "messages": []map[string]any{{"role": "user", "content": "x"}}, "stream": true}, 429, "requests", "rate_limit_exceeded", "Rate limit reached for mock-error-429", "1"},
		{"bad directive", chatBody("x #mock chunks=lots", nil), 400, "invalid_request_error", "", "invalid directive", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, base+"/v1/chat/completions", tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if tc.status == 429 && resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
				t.Fatalf("headers %v", resp.Header)
			}
			b := readAll(t, resp)
			var e apiError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			var raw map[string]map[string]json.RawMessage
			_ = json.Unmarshal(b, &raw)
			if _, ok := raw["error"]["param"]; !ok {
				t.Fatalf("no param key: %s", b)
			}
			if e.Error.Type != tc.typ || e.Error.Message == "" || !strings.Contains(e.Error.Message, tc.message) {
				t.Fatalf("error %s", b)
			}
			if (tc.code == "") != (e.Error.Code == nil) || (e.Error.Code != nil && *e.Error.Code != tc.code) {
				t.Fatalf("code in %s, want %q", b, tc.code)
			}
		})
	}
	if n := len(s.Requests()); n != len(cases) {
		t.Fatalf("recorded %d requests", n)
	}
}

func TestCutAfter(t *testing.T) {
	_, base := startServer(t, Config{})
	t.Run("stream", func(t *testing.T) {
		resp := post(t, base+"/v1/chat/completions", chatBody("x #mock cut_after=3 chunks=10", map[string]any{"stream": true}))
		defer resp.Body.Close()
		evs, err := readEvents(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
		if len(evs) != 4 { // role chunk + 3 content chunks
			t.Fatalf("events %q", evs)
		}
		for _, e := range evs {
			if e == "[DONE]" {
				t.Fatal("saw [DONE]")
			}
		}
	})
	t.Run("plain", func(t *testing.T) {
		resp := post(t, base+"/v1/chat/completions", chatBody("x #mock cut_after=0", nil))
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
	})
	t.Run("completions", func(t *testing.T) {
		resp := post(t, base+"/v1/completions", map[string]any{"model": "gpt-3.5-turbo-instruct", "prompt": "x #mock cut_after=2", "stream": true})
		defer resp.Body.Close()
		evs, err := readEvents(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(evs) != 2 {
			t.Fatalf("events %q, err %v", evs, err)
		}
	})
}

func TestCancelMidStream(t *testing.T) {
	s, base := startServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := doJSON(t, ctx, http.MethodPost, base+"/v1/chat/completions",
		chatBody("x #mock chunks=200 chunk_delay_ms=20", map[string]any{"stream": true}), nil)
	br := bufio.NewReader(resp.Body)
	for seen := 0; seen < 3; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			seen++
		}
	}
	cancelAt := time.Now()
	cancel()
	resp.Body.Close()
	select {
	case o := <-s.Canceled():
		if o.Path != "/v1/chat/completions" || o.Canceled.IsZero() || o.Canceled.Before(cancelAt) || o.Done.IsZero() {
			t.Fatalf("observed %+v", o)
		}
		if d := o.Canceled.Sub(cancelAt); d > 2*time.Second {
			t.Fatalf("cancellation seen after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancellation observed")
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Canceled.IsZero() {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestCancelDuringLatency(t *testing.T) {
	s, base := startServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"x #mock latency_ms=10000"}]}`))
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request succeeded")
	}
	select {
	case o := <-s.Canceled():
		if d := o.Canceled.Sub(start); d > 3*time.Second {
			t.Fatalf("canceled after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancellation observed")
	}
}

func TestLatencyAndSilence(t *testing.T) {
	_, base := startServer(t, Config{Latency: 500 * time.Millisecond})
	start := time.Now()
	resp := post(t, base+"/v1/chat/completions", chatBody("x", nil))
	readAll(t, resp)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("config latency: answered after %v", d)
	}
	start = time.Now()
	resp = post(t, base+"/v1/chat/completions", chatBody("x #mock latency_ms=0 silent_ms=150 chunks=2", map[string]any{"stream": true}))
	defer resp.Body.Close()
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Fatalf("latency_ms=0 did not override: headers after %v", d)
	}
	br := bufio.NewReader(resp.Body)
	var times []time.Duration
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		if strings.HasPrefix(line, "data: ") {
			times = append(times, time.Since(start))
		}
	}
	if len(times) != 5 || times[1]-times[0] < 140*time.Millisecond {
		t.Fatalf("event times %v", times)
	}
}

func TestEmbeddings(t *testing.T) {
	_, base := startServer(t, Config{})
	type embResp struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	get := func(body map[string]any) embResp {
		t.Helper()
		resp := post(t, base+"/v1/embeddings", body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
		}
		var r embResp
		decodeBody(t, resp, &r)
		return r
	}
	floats := func(raw json.RawMessage) []float32 {
		var v []float32
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	r := get(map[string]any{"model": "text-embedding-3-small", "input": "hello world"})
	if r.Object != "list" || r.Model != "text-embedding-3-small" || len(r.Data) != 1 || r.Data[0].Object != "embedding" || r.Usage.PromptTokens != 2 || r.Usage.TotalTokens != 2 {
		t.Fatalf("response %+v", r)
	}
	v := floats(r.Data[0].Embedding)
	if len(v) != 8 {
		t.Fatalf("dims %d", len(v))
	}
	var norm float64
	for _, x := range v {
		norm += float64(x) * float64(x)
	}
	if math.Abs(norm-1) > 1e-3 {
		t.Fatalf("norm %v", norm)
	}

	r2 := get(map[string]any{"model": "m", "input": []string{"hello world", "other text here"}, "dimensions": 5})
	if len(r2.Data) != 2 || r2.Data[1].Index != 1 || r2.Usage.PromptTokens != 5 {
		t.Fatalf("array response %+v", r2)
	}
	a, b := floats(r2.Data[0].Embedding), floats(r2.Data[1].Embedding)
	if len(a) != 5 || len(b) != 5 || a[0] == b[0] {
		t.Fatalf("vectors %v %v", a, b)
	}
	// Deterministic: same text, same vector (prefix of the 8-dim one is not required).
	r3 := get(map[string]any{"model": "m", "input": "hello world", "dimensions": 5})
	if c := floats(r3.Data[0].Embedding); c[0] != a[0] || c[4] != a[4] {
		t.Fatalf("not deterministic: %v vs %v", c, a)
	}

	r4 := get(map[string]any{"model": "m", "input": []int{1, 2, 3, 4}})
	if len(r4.Data) != 1 || r4.Usage.PromptTokens != 4 {
		t.Fatalf("token input %+v", r4)
	}
	r5 := get(map[string]any{"model": "m", "input": [][]int{{1, 2}, {3}}})
	if len(r5.Data) != 2 || r5.Usage.PromptTokens != 3 {
		t.Fatalf("token arrays input %+v", r5)
	}

	r6 := get(map[string]any{"model": "m", "input": []string{"hello world", "other text here"}, "dimensions": 5, "encoding_format": "base64"})
	var s string
	if err := json.Unmarshal(r6.Data[0].Embedding, &s); err != nil {
		t.Fatalf("base64 embedding is not a string: %s", r6.Data[0].Embedding)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 20 {
		t.Fatalf("base64 %q: %v", s, err)
	}
	for i := range 5 {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != a[i] {
			t.Fatalf("base64 dim %d = %v, float = %v", i, got, a[i])
		}
	}

	resp := post(t, base+"/v1/embeddings", map[string]any{"model": "m", "input": "x #mock status=500"})
	if resp.StatusCode != 500 {
		t.Fatalf("directive status %d", resp.StatusCode)
	}
	readAll(t, resp)
}

func TestLegacyCompletions(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 4})
	var c struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Text         string `json:"text"`
			Index        int    `json:"index"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	decodeBody(t, post(t, base+"/v1/completions", map[string]any{"model": "gpt-3.5-turbo-instruct", "prompt": "once upon a time"}), &c)
	if !strings.HasPrefix(c.ID, "cmpl-") || c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].Text != Content(4) || c.Choices[0].FinishReason != "stop" || c.Usage != (usage{4, 4, 8}) {
		t.Fatalf("completion %+v", c)
	}

	resp := post(t, base+"/v1/completions", map[string]any{"model": "gpt-3.5-turbo-instruct", "prompt": "x", "stream": true, "stream_options": map[string]any{"include_usage": true}})
	evs, err := readEvents(resp.Body)
	resp.Body.Close()
	if err != nil || len(evs) != 4+1+1+1 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("events %q: %v", evs, err)
	}
	var text strings.Builder
	for i, e := range evs[:4] {
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(e), &ch); err != nil || ch.Object != "text_completion" || ch.Choices[0].FinishReason != nil {
			t.Fatalf("chunk %d %s: %v", i, e, err)
		}
		text.WriteString(ch.Choices[0].Text)
	}
	if text.String() != Content(4) || !strings.Contains(evs[4], `"finish_reason":"stop"`) || !strings.Contains(evs[5], `"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":4,"total_tokens":5}`) {
		t.Fatalf("stream %q", evs)
	}
}

func TestModels(t *testing.T) {
	_, base := startServer(t, Config{})
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	decodeBody(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1/models", nil, nil), &list)
	ids := map[string]bool{}
	for _, m := range list.Data {
		if m.Object != "model" || m.OwnedBy != "mock" || m.Created == 0 {
			t.Fatalf("model %+v", m)
		}
		ids[m.ID] = true
	}
	for _, id := range []string{"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "mock-large"} {
		if !ids[id] {
			t.Fatalf("missing %s in %+v", id, list)
		}
	}
	var one struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	decodeBody(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1/models/gpt-4o", nil, nil), &one)
	if one.ID != "gpt-4o" || one.Object != "model" {
		t.Fatalf("model %+v", one)
	}
	resp := doJSON(t, context.Background(), http.MethodGet, base+"/v1/models/nope", nil, nil)
	var e apiError
	if resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	decodeBody(t, resp, &e)
	if e.Error.Type != "invalid_request_error" || e.Error.Code == nil || *e.Error.Code != "model_not_found" || !strings.Contains(e.Error.Message, "nope") {
		t.Fatalf("error %+v", e)
	}
}

func TestRoutingErrors(t *testing.T) {
	_, base := startServer(t, Config{})
	cases := []struct {
		method, path string
		body         any
		status       int
	}{
		{http.MethodPost, "/v1/nope", "{}", 404},
		{http.MethodGet, "/", nil, 404},
		{http.MethodGet, "/v1/chat/completions", nil, 405},
		{http.MethodPost, "/v1/models", "{}", 405},
		{http.MethodPost, "/v1/chat/completions", "{not json", 400},
		{http.MethodPost, "/v1/chat/completions", "", 400},
		{http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`, 400},
		{http.MethodPost, "/v1/chat/completions", `{"model":"m","n":"two","messages":[{"role":"user","content":"x"}]}`, 400},
		{http.MethodPost, "/v1/embeddings", `{"model":"m","input":"x","encoding_format":"hex"}`, 400},
	}
	for _, tc := range cases {
		resp := doJSON(t, context.Background(), tc.method, base+tc.path, tc.body, nil)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
		if tc.status == 405 && resp.Header.Get("Allow") == "" {
			t.Fatalf("%s %s: no Allow header", tc.method, tc.path)
		}
		var e apiError
		decodeBody(t, resp, &e)
		if e.Error.Message == "" || e.Error.Type != "invalid_request_error" {
			t.Fatalf("%s %s: error %+v", tc.method, tc.path, e)
		}
	}
}

func TestAuth(t *testing.T) {
	_, base := startServer(t, Config{APIKey: "sk-test-secret-123456"})
	body := chatBody("x", nil)
	check := func(hdr map[string]string, status int, code string) {
		t.Helper()
		resp := doJSON(t, context.Background(), http.MethodPost, base+"/v1/chat/completions", body, hdr)
		if resp.StatusCode != status {
			t.Fatalf("%v: status %d, want %d", hdr, resp.StatusCode, status)
		}
		if status != 401 {
			readAll(t, resp)
			return
		}
		var e apiError
		decodeBody(t, resp, &e)
		if e.Error.Type != "invalid_request_error" || (code == "") != (e.Error.Code == nil) || (e.Error.Code != nil && *e.Error.Code != code) {
			t.Fatalf("%v: error %+v", hdr, e)
		}
		if strings.Contains(e.Error.Message, "secret") {
			t.Fatalf("message leaks the key: %s", e.Error.Message)
		}
	}
	check(nil, 401, "")
	check(map[string]string{"Authorization": "Bearer sk-wrong-secret-999999"}, 401, "invalid_api_key")
	check(map[string]string{"Authorization": "Bearer sk-test-secret-123456"}, 200, "")
	resp := doJSON(t, context.Background(), http.MethodGet, base+"/v1/models", nil, nil)
	readAll(t, resp)
	if resp.StatusCode != 401 {
		t.Fatalf("models without key: %d", resp.StatusCode)
	}
}

func TestFailFirst(t *testing.T) {
	s, base := startServer(t, Config{})
	statuses := func(text string, n int) []int {
		var out []int
		for range n {
			resp := post(t, base+"/v1/chat/completions", chatBody(text, nil))
			readAll(t, resp)
			out = append(out, resp.StatusCode)
		}
		return out
	}
	if got := statuses("try #mock fail_first=2 id=a", 4); got[0] != 500 || got[1] != 500 || got[2] != 200 || got[3] != 200 {
		t.Fatalf("fail_first=2: %v", got)
	}
	if got := statuses("try #mock fail_first=1 status=503 id=b", 3); got[0] != 503 || got[1] != 200 || got[2] != 200 {
		t.Fatalf("fail_first=1 status=503: %v", got)
	}
	// A different directive string has its own counter.
	if got := statuses("try #mock fail_first=1 id=c", 2); got[0] != 500 || got[1] != 200 {
		t.Fatalf("id=c: %v", got)
	}
	s.Reset()
	if len(s.Requests()) != 0 {
		t.Fatal("Reset kept requests")
	}
	if got := statuses("try #mock fail_first=2 id=a", 1); got[0] != 500 {
		t.Fatalf("after Reset: %v", got)
	}
}

func TestRecordingBounded(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1005 {
		req := httptest.NewRequest(http.MethodGet, "/v1/models/m"+strconv.Itoa(i), nil)
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
	reqs := s.Requests()
	if len(reqs) != 1000 || reqs[0].Path != "/v1/models/m5" || reqs[999].Path != "/v1/models/m1004" {
		t.Fatalf("recorded %d, first %q, last %q", len(reqs), reqs[0].Path, reqs[len(reqs)-1].Path)
	}
}

func TestDirectiveParsing(t *testing.T) {
	s, err := New(Config{Chunks: 9, Latency: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d := s.baseDirectives()
	if err := d.parse("hello #mock status=429 retry_after=7 chunks=200 latency_ms=0 tool_call=f trailing words chunks=1"); err != nil {
		t.Fatal(err)
	}
	if d.status != 429 || d.retryAfter != 7 || d.chunks != 200 || d.latency != 0 || d.toolCall != "f" || d.cutAfter != -1 {
		t.Fatalf("parsed %+v", d)
	}
	if d.raw != "#mock status=429 retry_after=7 chunks=200 latency_ms=0 tool_call=f" {
		t.Fatalf("raw %q", d.raw)
	}
	d = s.baseDirectives()
	if err := d.parse("#mockery chunks=3"); err != nil || d.chunks != 9 || d.latency != time.Second {
		t.Fatalf("#mockery parsed: %+v %v", d, err)
	}
	for _, bad := range []string{"#mock status=200", "#mock chunks=-1", "#mock latency_ms=x", "#mock tool_call="} {
		d = s.baseDirectives()
		if err := d.parse(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	d = s.baseDirectives()
	d.applyModel("mock-error-503")
	if d.status != 503 {
		t.Fatalf("model directive %+v", d)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\nctl\x01", "héllo ✓", "bad\xffutf8", "sep\u2028x"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q → %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Fatalf("%q → %s → %q", s, b, got)
		}
	}
}

func BenchmarkChatPlain(b *testing.B) {
	s, _ := New(Config{})
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
}

func BenchmarkChatStream(b *testing.B) {
	s, _ := New(Config{})
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
}

func BenchmarkLoopbackChatStream(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello there"}]}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
