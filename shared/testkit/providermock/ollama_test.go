package providermock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func ollamaBody(text string, extra map[string]any) map[string]any {
	m := map[string]any{
		"model": "llama3.2",
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

type ollamaLine struct {
	Model     string `json:"model"`
	CreatedAt string `json:"created_at"`
	Message   *struct {
		Role      string `json:"role"`
		Content   string `json:"content"`
		ToolCalls []struct {
			Function struct {
				Name      string          `json:"name"`
				Arguments json.RawMessage `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"message"`
	Response           *string `json:"response"`
	Done               bool    `json:"done"`
	DoneReason         string  `json:"done_reason"`
	TotalDuration      int64   `json:"total_duration"`
	LoadDuration       int64   `json:"load_duration"`
	PromptEvalCount    int     `json:"prompt_eval_count"`
	PromptEvalDuration int64   `json:"prompt_eval_duration"`
	EvalCount          int     `json:"eval_count"`
	EvalDuration       int64   `json:"eval_duration"`
	Error              string  `json:"error"`
}

// readLines reads NDJSON lines until the body ends; it returns the raw
// lines and the read error (nil at a clean end).
func readLines(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for {
		line, err := br.ReadString('\n')
		if strings.HasSuffix(line, "\n") {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
		if err == io.EOF {
			if line != "" {
				return out, io.ErrUnexpectedEOF
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func streamOllama(t *testing.T, url string, body map[string]any) ([]ollamaLine, []string) {
	t.Helper()
	resp := post(t, url, body)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	raw, err := readLines(resp.Body)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	out := make([]ollamaLine, len(raw))
	for i, l := range raw {
		if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
			t.Fatalf("line %s: %v", l, err)
		}
	}
	return out, raw
}

// checkFinal asserts the final line of an answer.
func checkFinal(t *testing.T, l ollamaLine, reason string, prompt, eval int) {
	t.Helper()
	if !l.Done || l.DoneReason != reason || l.PromptEvalCount != prompt || l.EvalCount != eval ||
		l.LoadDuration <= 0 || l.PromptEvalDuration <= 0 || l.EvalDuration <= 0 ||
		l.TotalDuration < l.LoadDuration+l.PromptEvalDuration+l.EvalDuration {
		t.Fatalf("final line %+v", l)
	}
}

func checkOllamaError(t *testing.T, resp *http.Response, status int, message string) {
	t.Helper()
	b := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(b, &e); err != nil || jsonKeys(t, b) != "error" || !strings.Contains(e.Error, message) {
		t.Fatalf("error %s, want ~%q", b, message)
	}
}

func TestOllamaChatStream(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindOllama, Chunks: 5})
	// No "stream" field: Ollama streams by default.
	ls, raw := streamOllama(t, base+"/api/chat", ollamaBody("hello there #mock chunks=7", nil))
	if len(ls) != 8 {
		t.Fatalf("%d lines", len(ls))
	}
	var text strings.Builder
	for i, l := range ls[:7] {
		if got := jsonKeys(t, []byte(raw[i])); got != "created_at,done,message,model" {
			t.Fatalf("line %d keys %s", i, got)
		}
		if l.Model != "llama3.2" || l.Done || l.Message == nil || l.Message.Role != "assistant" || l.Message.Content != piece(i) {
			t.Fatalf("line %d: %s", i, raw[i])
		}
		if _, err := time.Parse(time.RFC3339Nano, l.CreatedAt); err != nil {
			t.Fatalf("created_at %q", l.CreatedAt)
		}
		text.WriteString(l.Message.Content)
	}
	if text.String() != Content(7) {
		t.Fatalf("text %q", text.String())
	}
	final := ls[7]
	if got := jsonKeys(t, []byte(raw[7])); got != "created_at,done,done_reason,eval_count,eval_duration,load_duration,message,model,prompt_eval_count,prompt_eval_duration,total_duration" {
		t.Fatalf("final keys %s", got)
	}
	if final.Message == nil || final.Message.Content != "" || final.Message.Role != "assistant" {
		t.Fatalf("final %s", raw[7])
	}
	checkFinal(t, final, "stop", 6, 7)
	if reqs := s.Requests(); len(reqs) != 1 || reqs[0].Path != "/api/chat" || reqs[0].Done.IsZero() {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestOllamaChatPlain(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	resp := post(t, base+"/api/chat", ollamaBody("say hello to me", map[string]any{"stream": false}))
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var l ollamaLine
	decodeBody(t, resp, &l)
	if l.Message == nil || l.Message.Content != Content(16) || l.Model != "llama3.2" {
		t.Fatalf("answer %+v", l)
	}
	checkFinal(t, l, "stop", 6, 16)

	decodeBody(t, post(t, base+"/api/chat", ollamaBody("x #mock chunks=9", map[string]any{"stream": false, "options": map[string]any{"num_predict": 3, "temperature": 0}})), &l)
	if l.Message.Content != Content(3) {
		t.Fatalf("num_predict: %+v", l)
	}
	checkFinal(t, l, "length", 5, 3)

	// Without messages Ollama only loads the model.
	decodeBody(t, post(t, base+"/api/chat", map[string]any{"model": "llama3.2", "messages": []any{}}), &l)
	if !l.Done || l.DoneReason != "load" {
		t.Fatalf("load: %+v", l)
	}
}

var ollamaTools = []map[string]any{
	{"type": "function", "function": map[string]any{"name": "get_time", "parameters": map[string]any{"type": "object"}}},
	{"type": "function", "function": map[string]any{"name": "get_weather", "parameters": map[string]any{"type": "object"}}},
}

func TestOllamaToolCall(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	check := func(t *testing.T, l ollamaLine) {
		t.Helper()
		if l.Message == nil || l.Message.Content != "" || len(l.Message.ToolCalls) != 1 {
			t.Fatalf("message %+v", l.Message)
		}
		f := l.Message.ToolCalls[0].Function
		if f.Name != "get_weather" || string(f.Arguments) != ToolArguments {
			t.Fatalf("call %+v", f)
		}
	}
	t.Run("stream", func(t *testing.T) {
		ls, _ := streamOllama(t, base+"/api/chat", ollamaBody("weather? #mock tool_call=get_weather", map[string]any{"tools": ollamaTools}))
		if len(ls) != 2 || ls[0].Done {
			t.Fatalf("lines %+v", ls)
		}
		check(t, ls[0])
		checkFinal(t, ls[1], "stop", 5, len(toolFragments))
	})
	t.Run("plain", func(t *testing.T) {
		var l ollamaLine
		decodeBody(t, post(t, base+"/api/chat", ollamaBody("weather? #mock tool_call=get_weather", map[string]any{"tools": ollamaTools, "stream": false})), &l)
		check(t, l)
		checkFinal(t, l, "stop", 5, len(toolFragments))
	})
	for name, body := range map[string]map[string]any{
		"undeclared": ollamaBody("weather? #mock tool_call=get_stock", map[string]any{"tools": ollamaTools, "stream": false}),
		"no tools":   ollamaBody("weather? #mock tool_call=get_weather", map[string]any{"stream": false}),
	} {
		t.Run(name, func(t *testing.T) {
			var l ollamaLine
			decodeBody(t, post(t, base+"/api/chat", body), &l)
			if len(l.Message.ToolCalls) != 0 || l.Message.Content != Content(16) {
				t.Fatalf("want text, got %+v", l.Message)
			}
		})
	}
}

func TestOllamaGenerate(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	ls, raw := streamOllama(t, base+"/api/generate", map[string]any{"model": "llama3.2", "prompt": "once upon a time #mock chunks=3"})
	if len(ls) != 4 {
		t.Fatalf("lines %q", raw)
	}
	var text strings.Builder
	for i, l := range ls[:3] {
		if l.Response == nil || l.Message != nil || l.Done {
			t.Fatalf("line %s", raw[i])
		}
		text.WriteString(*l.Response)
	}
	if text.String() != Content(3) || ls[3].Response == nil || *ls[3].Response != "" {
		t.Fatalf("text %q, final %s", text.String(), raw[3])
	}
	checkFinal(t, ls[3], "stop", 6, 3)
	var l ollamaLine
	decodeBody(t, post(t, base+"/api/generate", map[string]any{"model": "llama3.2", "prompt": "x", "stream": false, "options": map[string]any{"num_predict": 2}}), &l)
	if l.Response == nil || *l.Response != Content(2) {
		t.Fatalf("generate %+v", l)
	}
	checkFinal(t, l, "length", 1, 2)
}

func TestOllamaErrorStatuses(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	cases := []struct {
		directive  string
		status     int
		message    string
		retryAfter string
	}{
		{"status=400", 400, "invalid request", ""},
		{"status=404", 404, `model "llama3.2" not found, try pulling it first`, ""},
		{"status=429", 429, "too many requests", "1"},
		{"status=500", 500, "llama runner process has terminated", ""},
		{"status=503 retry_after=2", 503, "server busy", "2"},
		{"status=502", 502, "status=502", ""},
		{"chunks=lots", 400, "invalid directive", ""},
	}
	for _, tc := range cases {
		t.Run(tc.directive, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				resp := post(t, base+"/api/chat", ollamaBody("x #mock "+tc.directive, map[string]any{"stream": stream}))
				if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Fatalf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				checkOllamaError(t, resp, tc.status, tc.message)
			}
		})
	}
	t.Run("model", func(t *testing.T) {
		checkOllamaError(t, post(t, base+"/api/chat", map[string]any{"model": "mock-error-404", "messages": []map[string]any{{"role": "user", "content": "x"}}}),
			404, `model "mock-error-404" not found, try pulling it first`)
	})
	t.Run("validation", func(t *testing.T) {
		checkOllamaError(t, post(t, base+"/api/chat", map[string]any{"messages": []any{}}), 400, "model is required")
		checkOllamaError(t, post(t, base+"/api/chat", "{nope"), 400, "invalid character")
		checkOllamaError(t, doJSON(t, context.Background(), http.MethodPost, base+"/api/chat", nil, nil), 400, "missing request body")
	})
	t.Run("routing", func(t *testing.T) {
		resp := doJSON(t, context.Background(), http.MethodGet, base+"/api/nope", nil, nil)
		if b := readAll(t, resp); resp.StatusCode != 404 || string(b) != "404 page not found" {
			t.Fatalf("unknown path: %d %q", resp.StatusCode, b)
		}
		resp = doJSON(t, context.Background(), http.MethodGet, base+"/api/chat", nil, nil)
		if readAll(t, resp); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("wrong method: %d", resp.StatusCode)
		}
	})
}

func TestOllamaCutAndErrorAfter(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	t.Run("cut_after", func(t *testing.T) {
		resp := post(t, base+"/api/chat", ollamaBody("x #mock cut_after=3 chunks=10", nil))
		defer resp.Body.Close()
		lines, err := readLines(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(lines) != 3 {
			t.Fatalf("lines %q, err %v", lines, err)
		}
	})
	t.Run("cut_after plain", func(t *testing.T) {
		resp := post(t, base+"/api/chat", ollamaBody("x #mock cut_after=0", map[string]any{"stream": false}))
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
	})
	t.Run("error_after", func(t *testing.T) {
		ls, raw := streamOllama(t, base+"/api/chat", ollamaBody("x #mock error_after=2 chunks=10", nil))
		if len(ls) != 3 || ls[0].Done || ls[1].Done || jsonKeys(t, []byte(raw[2])) != "error" || !strings.Contains(ls[2].Error, "error was encountered") {
			t.Fatalf("lines %q", raw)
		}
	})
}

func TestOllamaEmbed(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	type embedResp struct {
		Model           string      `json:"model"`
		Embeddings      [][]float32 `json:"embeddings"`
		TotalDuration   int64       `json:"total_duration"`
		LoadDuration    int64       `json:"load_duration"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}
	a, b := make([]float32, 8), make([]float32, 8)
	Embedding(a, "hello world")
	Embedding(b, "other text here")
	var r embedResp
	decodeBody(t, post(t, base+"/api/embed", map[string]any{"model": "all-minilm", "input": "hello world"}), &r)
	if r.Model != "all-minilm" || len(r.Embeddings) != 1 || !slices.Equal(r.Embeddings[0], a) || r.PromptEvalCount != 2 || r.TotalDuration < r.LoadDuration || r.LoadDuration <= 0 {
		t.Fatalf("single %+v", r)
	}
	decodeBody(t, post(t, base+"/api/embed", map[string]any{"model": "all-minilm", "input": []string{"hello world", "other text here"}}), &r)
	if len(r.Embeddings) != 2 || !slices.Equal(r.Embeddings[1], b) || r.PromptEvalCount != 5 {
		t.Fatalf("array %+v", r)
	}
	checkOllamaError(t, post(t, base+"/api/embed", map[string]any{"model": "all-minilm", "input": "x #mock status=500"}), 500, "terminated")
}

func TestOllamaStaticAndOpenAICompat(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	get := func(path string) []byte {
		resp := doJSON(t, context.Background(), http.MethodGet, base+path, nil, nil)
		b := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return b
	}
	var tags struct {
		Models []struct {
			Name, Model, Digest string
			ModifiedAt          string `json:"modified_at"`
			Size                int64
			Details             struct {
				Format            string `json:"format"`
				Family            string `json:"family"`
				ParameterSize     string `json:"parameter_size"`
				QuantizationLevel string `json:"quantization_level"`
			}
		}
	}
	if err := json.Unmarshal(get("/api/tags"), &tags); err != nil || len(tags.Models) < 2 {
		t.Fatalf("tags %+v: %v", tags, err)
	}
	for _, m := range tags.Models {
		if m.Name == "" || m.Model != m.Name || len(m.Digest) != 64 || m.Size <= 0 || m.Details.Format != "gguf" || m.Details.Family == "" {
			t.Fatalf("model %+v", m)
		}
	}
	var v struct{ Version string }
	if err := json.Unmarshal(get("/api/version"), &v); err != nil || v.Version == "" {
		t.Fatalf("version %+v", v)
	}
	if b := get("/"); string(b) != "Ollama is running" {
		t.Fatalf("root %q", b)
	}
	// Ollama also serves the OpenAI-compatible API under /v1.
	var c chatCompletion
	decodeBody(t, post(t, base+"/v1/chat/completions", chatBody("x #mock chunks=3", nil)), &c)
	if *c.Choices[0].Message.Content != Content(3) {
		t.Fatalf("compat %+v", c)
	}
}

func TestOllamaAuth(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama, APIKey: "ollama-secret-123456"})
	body := ollamaBody("x", map[string]any{"stream": false})
	checkOllamaError(t, doJSON(t, context.Background(), http.MethodPost, base+"/api/chat", body, nil), 401, "unauthorized")
	checkOllamaError(t, doJSON(t, context.Background(), http.MethodPost, base+"/api/chat", body, map[string]string{"Authorization": "Bearer nope"}), 401, "unauthorized")
	resp := doJSON(t, context.Background(), http.MethodPost, base+"/api/chat", body, map[string]string{"Authorization": "Bearer ollama-secret-123456"})
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("with key: %d", resp.StatusCode)
	}
	resp = doJSON(t, context.Background(), http.MethodPost, base+"/v1/chat/completions", chatBody("x", nil), nil)
	if readAll(t, resp); resp.StatusCode != 401 {
		t.Fatalf("compat without key: %d", resp.StatusCode)
	}
}

func TestOllamaCancelMidStream(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindOllama})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := doJSON(t, ctx, http.MethodPost, base+"/api/chat", ollamaBody("x #mock chunks=200 chunk_delay_ms=20", nil), nil)
	br := bufio.NewReader(resp.Body)
	for range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	cancelAt := time.Now()
	cancel()
	resp.Body.Close()
	select {
	case o := <-s.Canceled():
		if o.Path != "/api/chat" || o.Canceled.Before(cancelAt) || o.Done.IsZero() {
			t.Fatalf("observed %+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancellation observed")
	}
}

func TestOllamaLatency(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindOllama})
	start := time.Now()
	resp := post(t, base+"/api/chat", ollamaBody("x #mock latency_ms=150", map[string]any{"stream": false}))
	readAll(t, resp)
	if d := time.Since(start); d < 150*time.Millisecond || resp.StatusCode != 200 {
		t.Fatalf("answered after %v with %d", d, resp.StatusCode)
	}
}

func BenchmarkOllamaStream(b *testing.B) {
	benchServe(b, Config{Kind: KindOllama}, "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"hello there"}]}`, nil)
}
