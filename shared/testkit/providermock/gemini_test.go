package providermock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/sse"
)

const geminiPath = "/v1beta/models/gemini-2.0-flash"

func geminiBody(text string, extra map[string]any) map[string]any {
	m := map[string]any{
		"systemInstruction": map[string]any{"parts": []map[string]any{{"text": "be brief"}}},
		"contents": []map[string]any{
			{"role": "user", "parts": []map[string]any{{"text": text}}},
		},
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

type geminiResponse struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text         *string `json:"text"`
				FunctionCall *struct {
					Name string          `json:"name"`
					Args json.RawMessage `json:"args"`
				} `json:"functionCall"`
			} `json:"parts"`
			Role string `json:"role"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
		Index        int    `json:"index"`
	} `json:"candidates"`
	UsageMetadata struct {
		PromptTokenCount     int `json:"promptTokenCount"`
		CandidatesTokenCount int `json:"candidatesTokenCount"`
		TotalTokenCount      int `json:"totalTokenCount"`
	} `json:"usageMetadata"`
	ModelVersion string `json:"modelVersion"`
	ResponseID   string `json:"responseId"`
}

func (r *geminiResponse) text() string {
	var sb strings.Builder
	for _, p := range r.Candidates[0].Content.Parts {
		if p.Text != nil {
			sb.WriteString(*p.Text)
		}
	}
	return sb.String()
}

type geminiErr struct {
	Error struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Status  string          `json:"status"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
}

// checkGeminiError asserts status and Google's error shape.
func checkGeminiError(t *testing.T, resp *http.Response, code int, status, message string) geminiErr {
	t.Helper()
	b := readAll(t, resp)
	if resp.StatusCode != code {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, code, b)
	}
	var e geminiErr
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	var inner struct{ Error json.RawMessage }
	_ = json.Unmarshal(b, &inner)
	keys := jsonKeys(t, inner.Error)
	if jsonKeys(t, b) != "error" || (keys != "code,message,status" && keys != "code,details,message,status") {
		t.Fatalf("shape %s", b)
	}
	if e.Error.Code != code || e.Error.Status != status || !strings.Contains(e.Error.Message, message) {
		t.Fatalf("error %s, want %d %s ~%q", b, code, status, message)
	}
	return e
}

func TestGeminiPlain(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindGemini})
	resp := post(t, base+geminiPath+":generateContent", geminiBody("say hello to me", nil))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	b := readAll(t, resp)
	if got := jsonKeys(t, b); got != "candidates,modelVersion,responseId,usageMetadata" {
		t.Fatalf("keys %s", got)
	}
	var r geminiResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	c := r.Candidates[0]
	if len(r.Candidates) != 1 || c.Content.Role != "model" || c.FinishReason != "STOP" || c.Index != 0 || len(c.Content.Parts) != 1 || r.text() != Content(16) {
		t.Fatalf("candidate %s", b)
	}
	if u := r.UsageMetadata; u.PromptTokenCount != 6 || u.CandidatesTokenCount != 16 || u.TotalTokenCount != 22 {
		t.Fatalf("usage %+v", u)
	}
	if r.ModelVersion != "gemini-2.0-flash" || r.ResponseID == "" {
		t.Fatalf("head %s", b)
	}
	if reqs := s.Requests(); len(reqs) != 1 || reqs[0].Path != geminiPath+":generateContent" {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestGeminiSnakeCaseAndMaxTokens(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini, Chunks: 10})
	body := map[string]any{
		"system_instruction": map[string]any{"parts": []map[string]any{{"text": "one two"}}},
		"contents": []map[string]any{
			{"role": "user", "parts": []map[string]any{{"text": "first #mock chunks=1"}}},
			{"role": "model", "parts": []map[string]any{{"text": "ok"}}},
			{"parts": []map[string]any{{"text": "three"}, {"inlineData": map[string]any{"mimeType": "image/png", "data": "AA=="}}, {"text": "#mock chunks=6"}}},
		},
		"generation_config": map[string]any{"max_output_tokens": 4, "temperature": 0.2},
		"safety_settings":   []any{},
	}
	var r geminiResponse
	decodeBody(t, post(t, base+geminiPath+":generateContent", body), &r)
	// A content without a role is the user's; its directive wins.
	if r.Candidates[0].FinishReason != "MAX_TOKENS" || r.text() != Content(4) || r.UsageMetadata.CandidatesTokenCount != 4 {
		t.Fatalf("got %+v", r)
	}
}

func streamGemini(t *testing.T, base string, body map[string]any) ([]geminiResponse, []byte) {
	t.Helper()
	resp := post(t, base+geminiPath+":streamGenerateContent?alt=sse", body)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readSSE(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	var out []geminiResponse
	for _, e := range evs {
		if e.name != "" {
			t.Fatalf("named event %q", e.name)
		}
		var r geminiResponse
		if err := json.Unmarshal(e.data, &r); err != nil {
			t.Fatalf("event %s: %v", e.data, err)
		}
		out = append(out, r)
	}
	return out, raw
}

func TestGeminiStream(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini, Chunks: 5})
	rs, raw := streamGemini(t, base, geminiBody("hello there #mock chunks=7", nil))
	if len(rs) != 7 {
		t.Fatalf("%d events", len(rs))
	}
	if !bytes.HasPrefix(raw, []byte("data: {")) || bytes.Count(raw, []byte("\r\n\r\n")) != 7 || bytes.Contains(raw, []byte("[DONE]")) {
		t.Fatalf("framing %q", raw)
	}
	var text strings.Builder
	for i, r := range rs {
		c := r.Candidates[0]
		if len(c.Content.Parts) != 1 || c.Content.Parts[0].Text == nil || c.Content.Role != "model" || r.ResponseID != rs[0].ResponseID {
			t.Fatalf("event %d: %+v", i, r)
		}
		if *c.Content.Parts[0].Text != piece(i) {
			t.Fatalf("event %d text %q", i, *c.Content.Parts[0].Text)
		}
		text.WriteString(*c.Content.Parts[0].Text)
		last := i == len(rs)-1
		if (c.FinishReason != "") == !last {
			t.Fatalf("event %d finishReason %q", i, c.FinishReason)
		}
		if u := r.UsageMetadata; u.PromptTokenCount != 6 || u.CandidatesTokenCount != i+1 || u.TotalTokenCount != 6+i+1 {
			t.Fatalf("event %d usage %+v", i, u)
		}
	}
	if text.String() != Content(7) || rs[6].Candidates[0].FinishReason != "STOP" {
		t.Fatalf("text %q", text.String())
	}
	// An empty answer is still one event, carrying the finish.
	rs, _ = streamGemini(t, base, geminiBody("x #mock chunks=0", nil))
	if len(rs) != 1 || rs[0].text() != "" || rs[0].Candidates[0].FinishReason != "STOP" {
		t.Fatalf("empty answer %+v", rs)
	}
}

func TestGeminiStreamJSONArray(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	resp := post(t, base+geminiPath+":streamGenerateContent", geminiBody("x #mock chunks=3", map[string]any{"generationConfig": map[string]any{"maxOutputTokens": 2}}))
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var rs []geminiResponse
	decodeBody(t, resp, &rs)
	if len(rs) != 2 || rs[0].text()+rs[1].text() != Content(2) || rs[1].Candidates[0].FinishReason != "MAX_TOKENS" {
		t.Fatalf("responses %+v", rs)
	}
}

var geminiTools = []map[string]any{{"functionDeclarations": []map[string]any{
	{"name": "get_time", "parameters": map[string]any{"type": "OBJECT"}},
	{"name": "get_weather", "description": "weather", "parameters": map[string]any{"type": "OBJECT"}},
}}}

func TestGeminiToolCall(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	anyMode := func(allowed ...string) map[string]any {
		fc := map[string]any{"mode": "ANY"}
		if allowed != nil {
			fc["allowedFunctionNames"] = allowed
		}
		return map[string]any{"functionCallingConfig": fc}
	}
	cases := []struct {
		name string
		body map[string]any
		tool string
	}{
		{"directive", geminiBody("weather? #mock tool_call=get_weather", map[string]any{"tools": geminiTools}), "get_weather"},
		{"snake_case tools", geminiBody("weather? #mock tool_call=get_weather", map[string]any{"tools": []map[string]any{{"function_declarations": []map[string]any{{"name": "get_weather"}}}}}), "get_weather"},
		{"mode ANY", geminiBody("weather?", map[string]any{"tools": geminiTools, "toolConfig": anyMode()}), "get_time"},
		{"mode ANY allowed", geminiBody("weather?", map[string]any{"tools": geminiTools, "toolConfig": anyMode("get_weather")}), "get_weather"},
		{"mode NONE", geminiBody("weather? #mock tool_call=get_weather", map[string]any{"tools": geminiTools, "toolConfig": map[string]any{"functionCallingConfig": map[string]any{"mode": "NONE"}}}), ""},
		{"undeclared", geminiBody("weather? #mock tool_call=get_stock", map[string]any{"tools": geminiTools}), ""},
		{"no tools", geminiBody("weather? #mock tool_call=get_weather", nil), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r geminiResponse
			decodeBody(t, post(t, base+geminiPath+":generateContent", tc.body), &r)
			c := r.Candidates[0]
			if tc.tool == "" {
				if len(c.Content.Parts) != 1 || c.Content.Parts[0].FunctionCall != nil || c.FinishReason != "STOP" {
					t.Fatalf("want text, got %+v", r)
				}
				return
			}
			if len(c.Content.Parts) != 1 || c.Content.Parts[0].Text != nil || c.FinishReason != "STOP" || c.Content.Role != "model" {
				t.Fatalf("candidate %+v", c)
			}
			fc := c.Content.Parts[0].FunctionCall
			if fc == nil || fc.Name != tc.tool || string(fc.Args) != ToolArguments {
				t.Fatalf("functionCall %+v", fc)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		rs, _ := streamGemini(t, base, geminiBody("weather? #mock tool_call=get_weather", map[string]any{"tools": geminiTools}))
		if len(rs) != 1 {
			t.Fatalf("%d events", len(rs))
		}
		c := rs[0].Candidates[0]
		fc := c.Content.Parts[0].FunctionCall
		if fc == nil || fc.Name != "get_weather" || string(fc.Args) != ToolArguments || c.FinishReason != "STOP" || rs[0].UsageMetadata.CandidatesTokenCount != len(toolFragments) {
			t.Fatalf("event %+v", rs[0])
		}
	})
}

func TestGeminiErrorStatuses(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	cases := []struct {
		directive  string
		code       int
		status     string
		message    string
		retryAfter string
	}{
		{"status=400", 400, "INVALID_ARGUMENT", "invalid argument", ""},
		{"status=401", 401, "UNAUTHENTICATED", "credentials", ""},
		{"status=403", 403, "PERMISSION_DENIED", "permission", ""},
		{"status=404", 404, "NOT_FOUND", "models/gemini-2.0-flash is not found", ""},
		{"status=429", 429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", "1"},
		{"status=429 retry_after=9", 429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", "9"},
		{"status=500", 500, "INTERNAL", "internal error", ""},
		{"status=503", 503, "UNAVAILABLE", "overloaded", ""},
		{"status=504", 504, "DEADLINE_EXCEEDED", "timed out", ""},
		{"status=529", 529, "INTERNAL", "status=529", ""},
		{"chunks=lots", 400, "INVALID_ARGUMENT", "invalid directive", ""},
	}
	for _, tc := range cases {
		t.Run(tc.directive, func(t *testing.T) {
			for _, action := range []string{":generateContent", ":streamGenerateContent?alt=sse"} {
				resp := post(t, base+geminiPath+action, geminiBody("x #mock "+tc.directive, nil))
				if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Fatalf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				e := checkGeminiError(t, resp, tc.code, tc.status, tc.message)
				if tc.code == 429 && !strings.Contains(string(e.Error.Details), `"retryDelay":"`+tc.retryAfter+`s"`) {
					t.Fatalf("details %s", e.Error.Details)
				}
			}
		})
	}
	t.Run("model", func(t *testing.T) {
		checkGeminiError(t, post(t, base+"/v1beta/models/mock-error-503:generateContent", geminiBody("x", nil)), 503, "UNAVAILABLE", "overloaded")
	})
}

func TestGeminiValidation(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	cases := []struct {
		name    string
		method  string
		path    string
		body    any
		code    int
		status  string
		message string
	}{
		{"unknown field", "POST", geminiPath + ":generateContent", geminiBody("x", map[string]any{"max_tokens": 5}), 400, "INVALID_ARGUMENT", `Unknown name "max_tokens"`},
		{"no contents", "POST", geminiPath + ":generateContent", `{"contents":[]}`, 400, "INVALID_ARGUMENT", "contents is not specified"},
		{"bad role", "POST", geminiPath + ":generateContent", `{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}`, 400, "INVALID_ARGUMENT", "valid role"},
		{"bad json", "POST", geminiPath + ":generateContent", "{nope", 400, "INVALID_ARGUMENT", "Invalid JSON payload"},
		{"unknown action", "POST", geminiPath + ":predict", "{}", 404, "NOT_FOUND", "Method not found"},
		{"unknown path", "POST", "/v1/chat/completions", "{}", 404, "NOT_FOUND", "Method not found"},
		{"wrong method", "GET", geminiPath + ":generateContent", nil, 405, "INVALID_ARGUMENT", "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkGeminiError(t, doJSON(t, context.Background(), tc.method, base+tc.path, tc.body, nil), tc.code, tc.status, tc.message)
		})
	}
}

func TestGeminiCutAfter(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	t.Run("stream", func(t *testing.T) {
		resp := post(t, base+geminiPath+":streamGenerateContent?alt=sse", geminiBody("x #mock cut_after=3 chunks=10", nil))
		defer resp.Body.Close()
		evs, err := readSSE(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(evs) != 3 {
			t.Fatalf("events %d, err %v", len(evs), err)
		}
		for _, e := range evs {
			if bytes.Contains(e.data, []byte("finishReason")) {
				t.Fatalf("finished before the cut: %s", e.data)
			}
		}
	})
	t.Run("plain", func(t *testing.T) {
		resp := post(t, base+geminiPath+":generateContent", geminiBody("x #mock cut_after=0", nil))
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
	})
}

func TestGeminiErrorAfter(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	resp := post(t, base+geminiPath+":streamGenerateContent?alt=sse", geminiBody("x #mock error_after=2 chunks=10", nil))
	defer resp.Body.Close()
	evs, err := readSSE(resp.Body)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events %d, err %v", len(evs), err)
	}
	var e geminiErr
	if err := json.Unmarshal(evs[2].data, &e); err != nil || e.Error.Code != 503 || e.Error.Status != "UNAVAILABLE" || e.Error.Message == "" {
		t.Fatalf("error event %s", evs[2].data)
	}
	// The JSON-array stream ends its array after the error element.
	resp = post(t, base+geminiPath+":streamGenerateContent", geminiBody("x #mock error_after=1 chunks=10", nil))
	var elems []json.RawMessage
	decodeBody(t, resp, &elems)
	if len(elems) != 2 || !bytes.Contains(elems[1], []byte(`"UNAVAILABLE"`)) {
		t.Fatalf("elements %s", elems)
	}
}

func TestGeminiAuth(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini, APIKey: "AIza-secret-123456"})
	url := base + geminiPath + ":generateContent"
	body := geminiBody("x", nil)
	checkGeminiError(t, doJSON(t, context.Background(), http.MethodPost, url, body, nil), 403, "PERMISSION_DENIED", "unregistered callers")
	checkGeminiError(t, doJSON(t, context.Background(), http.MethodPost, url, body, map[string]string{"x-goog-api-key": "wrong"}), 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
	checkGeminiError(t, doJSON(t, context.Background(), http.MethodPost, url+"?key=wrong", body, nil), 400, "INVALID_ARGUMENT", "API key not valid")
	for _, tc := range []struct {
		url string
		hdr map[string]string
	}{
		{url, map[string]string{"x-goog-api-key": "AIza-secret-123456"}},
		{url + "?key=AIza-secret-123456", nil},
		{base + geminiPath + ":streamGenerateContent?alt=sse&key=AIza-secret-123456", nil},
	} {
		resp := doJSON(t, context.Background(), http.MethodPost, tc.url, body, tc.hdr)
		if b := readAll(t, resp); resp.StatusCode != 200 || bytes.Contains(b, []byte("secret")) {
			t.Fatalf("%s: %d %s", tc.url, resp.StatusCode, b)
		}
	}
}

func TestGeminiModels(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	var list struct {
		Models []struct {
			Name                       string   `json:"name"`
			DisplayName                string   `json:"displayName"`
			SupportedGenerationMethods []string `json:"supportedGenerationMethods"`
		} `json:"models"`
	}
	decodeBody(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1beta/models", nil, nil), &list)
	if len(list.Models) < 2 {
		t.Fatalf("models %+v", list)
	}
	for _, m := range list.Models {
		if !strings.HasPrefix(m.Name, "models/") || m.DisplayName == "" || len(m.SupportedGenerationMethods) == 0 {
			t.Fatalf("model %+v", m)
		}
	}
	if !slices.Contains(list.Models[0].SupportedGenerationMethods, "generateContent") {
		t.Fatalf("first model %+v", list.Models[0])
	}
	var one struct{ Name string }
	decodeBody(t, doJSON(t, context.Background(), http.MethodGet, base+geminiPath, nil, nil), &one)
	if one.Name != "models/gemini-2.0-flash" {
		t.Fatalf("model %+v", one)
	}
	checkGeminiError(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1beta/models/nope", nil, nil), 404, "NOT_FOUND", "models/nope")
}

func TestGeminiEmbeddings(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindGemini})
	want := make([]float32, 8)
	Embedding(want, "hello world")
	var one struct {
		Embedding struct {
			Values []float32 `json:"values"`
		} `json:"embedding"`
	}
	decodeBody(t, post(t, base+"/v1beta/models/text-embedding-004:embedContent", map[string]any{
		"content": map[string]any{"parts": []map[string]any{{"text": "hello world"}}},
	}), &one)
	if !slices.Equal(one.Embedding.Values, want) {
		t.Fatalf("values %v, want %v", one.Embedding.Values, want)
	}
	var batch struct {
		Embeddings []struct {
			Values []float32 `json:"values"`
		} `json:"embeddings"`
	}
	decodeBody(t, post(t, base+"/v1beta/models/text-embedding-004:batchEmbedContents", map[string]any{"requests": []map[string]any{
		{"model": "models/text-embedding-004", "content": map[string]any{"parts": []map[string]any{{"text": "hello world"}}}},
		{"model": "models/text-embedding-004", "content": map[string]any{"parts": []map[string]any{{"text": "other"}}}, "outputDimensionality": 3},
	}}), &batch)
	if len(batch.Embeddings) != 2 || !slices.Equal(batch.Embeddings[0].Values, want) || len(batch.Embeddings[1].Values) != 3 {
		t.Fatalf("batch %+v", batch)
	}
	checkGeminiError(t, post(t, base+"/v1beta/models/text-embedding-004:embedContent", map[string]any{
		"content": map[string]any{"parts": []map[string]any{{"text": "x #mock status=429"}}},
	}), 429, "RESOURCE_EXHAUSTED", "exhausted")
}

func TestGeminiCancelMidStream(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindGemini})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := doJSON(t, ctx, http.MethodPost, base+geminiPath+":streamGenerateContent?alt=sse", geminiBody("x #mock chunks=200 chunk_delay_ms=20", nil), nil)
	rd := sse.NewReader(resp.Body)
	for range 3 {
		if _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancelAt := time.Now()
	cancel()
	resp.Body.Close()
	select {
	case o := <-s.Canceled():
		if o.Canceled.Before(cancelAt) || o.Done.IsZero() {
			t.Fatalf("observed %+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancellation observed")
	}
}

func BenchmarkGeminiStream(b *testing.B) {
	benchServe(b, Config{Kind: KindGemini}, geminiPath+":streamGenerateContent?alt=sse", `{"contents":[{"role":"user","parts":[{"text":"hello there"}]}]}`, nil)
}
