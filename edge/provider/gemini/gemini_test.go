package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

const testKey = "AIzaSy-test-secret-key"

func adapter(t *testing.T, h http.HandlerFunc, edit func(*table.Provider)) *Adapter {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := table.Provider{ID: "gem", Kind: table.KindGemini, BaseURL: srv.URL + "/v1beta/", APIKey: testKey}
	if edit != nil {
		edit(&p)
	}
	a, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Error(err) // not Fatal: handlers call golden too
	}
	return b
}

// jsonEqual compares two JSON texts as parsed values. It does not stop
// the test, so handlers may call it.
func jsonEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: not JSON: %v\n%s", what, err, got)
		return
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Errorf("%s: golden is not JSON: %v", what, err)
		return
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs\n got: %s\nwant: %s", what, compact(got), compact(want))
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

func chatReq(body string, stream bool) *llm.Request {
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "gemini-flash", Stream: stream, Body: []byte(body)}
}

const simpleBody = `{"model":"gemini-flash","messages":[{"role":"user","content":"hi"}]}`

// checkCall asserts what every upstream request must look like.
func checkCall(t *testing.T, r *http.Request, wantPath, wantQuery string) {
	t.Helper()
	if r.Method != http.MethodPost || r.URL.Path != wantPath || r.URL.RawQuery != wantQuery {
		t.Errorf("request %s %s?%s, want POST %s?%s", r.Method, r.URL.Path, r.URL.RawQuery, wantPath, wantQuery)
	}
	if got := r.Header.Get("x-goog-api-key"); got != testKey {
		t.Errorf("x-goog-api-key = %q", got)
	}
	if strings.Contains(r.URL.String(), testKey) {
		t.Error("the key is in the URL")
	}
	if r.Header.Get("Authorization") != "" {
		t.Error("an Authorization header was sent")
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestGoldenChat(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		checkCall(t, r, "/v1beta/models/gemini-2.5-flash:generateContent", "")
		body, _ := io.ReadAll(r.Body)
		jsonEqual(t, "upstream request", body, golden(t, "chat_request.gemini.json"))
		w.Header().Set("Content-Type", "application/json")
		w.Write(golden(t, "chat_response.gemini.json"))
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(string(golden(t, "chat_request.json")), false), "models/gemini-2.5-flash")
	if err != nil {
		t.Fatal(err)
	}
	cc := resp.Completion
	if cc == nil || resp.Body != nil || resp.Stream != nil {
		t.Fatalf("response %+v", resp)
	}
	if time.Since(time.Unix(cc.Created, 0)) > time.Minute {
		t.Errorf("created = %d", cc.Created)
	}
	cc.Created = 0
	got, _ := json.Marshal(cc)
	jsonEqual(t, "completion", got, golden(t, "chat_response.want.json"))
	if resp.Usage != (llm.Usage{PromptTokens: 182, CompletionTokens: 71, TotalTokens: 253}) || resp.Upstream <= 0 {
		t.Errorf("usage %+v upstream %v", resp.Usage, resp.Upstream)
	}
}

func TestGoldenStream(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		checkCall(t, r, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse")
		if r.Header.Get("Accept") != "text/event-stream" {
			t.Errorf("Accept = %q", r.Header.Get("Accept"))
		}
		body, _ := io.ReadAll(r.Body)
		jsonEqual(t, "upstream request", body, golden(t, "chat_request.gemini.json"))
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(golden(t, "stream.gemini.sse"))
	}, nil)
	req := chatReq(string(golden(t, "chat_request.json")), true)
	resp, err := a.Do(context.Background(), req, "gemini-2.5-flash")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	got := drain(t, resp.Stream)
	want := strings.Split(strings.TrimSpace(string(golden(t, "stream.want.jsonl"))), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		jsonEqual(t, "chunk "+string(rune('0'+i)), []byte(got[i]), []byte(want[i]))
	}
	if u, ok := resp.Stream.Usage(); !ok || u != (llm.Usage{PromptTokens: 182, CompletionTokens: 60, TotalTokens: 242}) {
		t.Errorf("usage %+v %v", u, ok)
	}
}

// drain reads a stream to io.EOF, returning each chunk as OpenAI JSON
// with created zeroed.
func drain(t testing.TB, s llm.Stream) []string {
	t.Helper()
	var out []string
	for {
		c, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("after %d chunks: %v", len(out), err)
		}
		if c.Raw != nil {
			t.Fatal("a translated chunk has Raw set")
		}
		if c.Created == 0 {
			t.Error("chunk without created")
		}
		c.Created = 0
		out = append(out, string(c.AppendJSON(nil)))
	}
}

func TestEndpoint(t *testing.T) {
	a, _ := New(table.Provider{ID: "g", BaseURL: "https://gl.example/v1beta/"})
	tests := []struct {
		model  string
		stream bool
		want   string
	}{
		{"gemini-2.0-flash", false, "https://gl.example/v1beta/models/gemini-2.0-flash:generateContent"},
		{"models/gemini-2.0-flash", true, "https://gl.example/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"},
		{"tunedModels/my-model-1", false, "https://gl.example/v1beta/tunedModels/my-model-1:generateContent"},
		{"../../evil?x=1#", false, "https://gl.example/v1beta/models/..%2F..%2Fevil%3Fx=1%23:generateContent"},
	}
	for _, tt := range tests {
		if got := a.endpoint(tt.model, tt.stream); got != tt.want {
			t.Errorf("endpoint(%q) = %s, want %s", tt.model, got, tt.want)
		}
	}
}

func TestUnsupportedOps(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		t.Error("an unsupported request reached the upstream")
	}, nil)
	for _, op := range []llm.Op{llm.OpEmbedding, llm.OpCompletion} {
		_, err := a.Do(context.Background(), &llm.Request{Op: op, Model: "m", Body: []byte(`{}`)}, "m")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Message, op.String()) {
			t.Errorf("%v: %v", op, err)
		}
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		header     string
		want       int
		typ        string
		retryable  bool
		retryAfter time.Duration
		msg        string
	}{
		{"rate limit", 429, `{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}`, "7", 429, llm.TypeRateLimit, true, 7 * time.Second, "rate limiting"},
		{"rate limit without retry-after", 429, `{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}`, "", 429, llm.TypeRateLimit, true, 0, "rate limiting"},
		{"internal", 500, `{"error":{"code":500,"message":"An internal error has occurred at 10.1.2.3","status":"INTERNAL"}}`, "", 502, llm.TypeUpstream, true, 0, "failed (status 500)"},
		{"overloaded", 503, `{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, "", 502, llm.TypeUpstream, true, 0, "failed (status 503)"},
		{"bad request", 400, `{"error":{"code":400,"message":"* GenerateContentRequest.generation_config.max_output_tokens: must be positive","status":"INVALID_ARGUMENT"}}`, "", 400, llm.TypeInvalidRequest, false, 0, "max_output_tokens: must be positive"},
		{"bad request in an array", 400, `[{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}]`, "", 400, llm.TypeInvalidRequest, false, 0, "Invalid JSON payload received."},
		{"key not valid", 400, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`, "", 502, llm.TypeUpstream, true, 0, "refused Meridian's credentials"},
		{"region not served", 400, `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`, "", 502, llm.TypeUpstream, true, 0, "cannot serve requests"},
		{"permission", 403, `{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}`, "", 502, llm.TypeUpstream, true, 0, "refused Meridian's credentials"},
		{"no model", 404, `{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}`, "", 502, llm.TypeUpstream, true, 0, "does not serve this model"},
		{"not json", 422, `<html>`, "", 400, llm.TypeInvalidRequest, false, 0, "rejected the request (status 422)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}, nil)
			for _, stream := range []bool{false, true} {
				_, err := a.Do(context.Background(), chatReq(simpleBody, stream), "gemini-2.0-flash")
				var e *llm.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v", err)
				}
				if e.Status != tt.want || e.Type != tt.typ || e.Retryable != tt.retryable || e.RetryAfter != tt.retryAfter || !strings.Contains(e.Message, tt.msg) {
					t.Errorf("stream=%v: got %+v", stream, e)
				}
				for _, leak := range []string{testKey, "10.1.2.3", "127.0.0.1", "v1beta"} {
					if strings.Contains(e.Message, leak) {
						t.Errorf("message leaks %q: %s", leak, e.Message)
					}
				}
			}
		})
	}
}

func TestBlockedPrompt(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: "+compact(golden(t, "blocked.gemini.json"))+"\r\n\r\n")
			return
		}
		w.Write(golden(t, "blocked.gemini.json"))
	}, nil)
	_, err := a.Do(context.Background(), chatReq(simpleBody, false), "gemini-2.0-flash")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != llm.FinishContentFilter || !strings.Contains(e.Message, "PROHIBITED_CONTENT") || e.Retryable {
		t.Fatalf("err = %+v", err)
	}

	resp, err := a.Do(context.Background(), chatReq(simpleBody, true), "gemini-2.0-flash")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	_, err = resp.Stream.Next()
	if !errors.As(err, &e) || e.Status != 400 || e.Code != llm.FinishContentFilter {
		t.Fatalf("stream err = %+v", err)
	}
	if _, again := resp.Stream.Next(); again != err {
		t.Errorf("second Next = %v, want the same error", again)
	}
}

func TestBadAnswer(t *testing.T) {
	for _, body := range []string{`not json`, `{"candidates":[]}`, `[1,2]`, `{"candidates":[{"index":99}]}`} {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }, nil)
		_, err := a.Do(context.Background(), chatReq(simpleBody, false), "gemini-2.0-flash")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || !strings.Contains(e.Message, "gem") {
			t.Errorf("%s: err = %+v", body, err)
		}
	}
}

func TestTranslationErrorNeverReachesUpstream(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		t.Error("an untranslatable request reached the upstream")
	}, nil)
	body := `{"model":"m","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}`
	_, err := a.Do(context.Background(), chatReq(body, false), "gemini-2.0-flash")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Param != "messages[0].tool_call_id" {
		t.Fatalf("err = %+v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	a, err := New(table.Provider{ID: "dead", Kind: table.KindGemini, BaseURL: "http://127.0.0.1:1/v1beta", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Do(context.Background(), chatReq(simpleBody, false), "m")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || strings.Contains(e.Message, "127.0.0.1") || strings.Contains(e.Error(), testKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestChunkTimeoutMidStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}],\"role\":\"model\"}}]}\r\n\r\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(p *table.Provider) { p.ChunkTimeout = 50 * time.Millisecond })
	resp, err := a.Do(context.Background(), chatReq(simpleBody, true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if c, err := resp.Stream.Next(); err != nil || c.Choices[0].Content != "a" {
		t.Fatalf("first chunk: %v", err)
	}
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 504 {
		t.Fatalf("err = %v, want a 504 timeout", err)
	}
}

// TestStreamReusesConnection checks that a finished stream hands its
// connection back to the pool: a new connection per stream would add a
// handshake to every time to first token.
func TestStreamReusesConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}]}\r\n\r\n")
		w.(http.Flusher).Flush()
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	a, err := New(table.Provider{ID: "gem", Kind: table.KindGemini, BaseURL: srv.URL + "/v1beta"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 5 {
		resp, err := a.Do(context.Background(), chatReq(simpleBody, true), "m")
		if err != nil {
			t.Fatal(err)
		}
		if n := len(drain(t, resp.Stream)); n != 3 {
			t.Fatalf("%d chunks, want role+text, finish, usage", n)
		}
		resp.Stream.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 streams used %d connections, want 1", n)
	}
}
