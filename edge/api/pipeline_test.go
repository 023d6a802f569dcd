package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/table"
)

// fake answers every request with do, and records the models it was asked for.
type fake struct {
	id string
	do func() (*llm.Response, error)
}

func (f *fake) Do(context.Context, *llm.Request, string) (*llm.Response, error) { return f.do() }
func (f *fake) Close()                                                          {}

const clientKey = "sk-pipeline-test-0123456789"

func keyHash(k string) string {
	s := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(s[:])
}

// tab routes model m to provider p, at rev, accepting key when it is set.
func tab(rev uint64, p, key string) *table.Table {
	t := &table.Table{
		Revision:  rev,
		Providers: []table.Provider{{ID: p, Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"}},
		Models:    []table.Model{{ID: "m"}},
		Routes:    []*table.Route{{Model: "m", Targets: []table.Target{{Provider: p}}}},
	}
	if key != "" {
		t.Keys = []*table.Key{{ID: "k", Hash: keyHash(key)}}
	}
	return t
}

type surfaces struct {
	gw  *gateway.Gateway
	cfg api.Config
	mux *http.ServeMux
}

func newSurfaces(t *testing.T, do func(id string) (*llm.Response, error)) *surfaces {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw := gateway.New(gateway.Config{Logger: quiet, NewProvider: func(p table.Provider) (provider.Provider, error) {
		return &fake{id: p.ID, do: func() (*llm.Response, error) { return do(p.ID) }}, nil
	}})
	t.Cleanup(gw.Close)
	s := &surfaces{gw: gw, cfg: api.Config{Gateway: gw, Logger: quiet, MaxBodyBytes: 8 << 20}, mux: http.NewServeMux()}
	openai.New(s.cfg).Register(s.mux)
	anthropic.New(s.cfg).Register(s.mux)
	return s
}

func (s *surfaces) post(path, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+clientKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
	w := httptest.NewRecorder()
	s.mux.ServeHTTP(w, r)
	return w
}

const (
	chatBody     = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	messagesBody = `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	completion   = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
)

// TestOneSnapshotPerRequest swaps the table after a request was
// authenticated and before it is routed: the new table drops the key
// and routes the model elsewhere. The request is served whole by the
// table it was authenticated against, never half by each.
func TestOneSnapshotPerRequest(t *testing.T) {
	var mu sync.Mutex
	served := map[string]int{}
	s := newSurfaces(t, func(id string) (*llm.Response, error) {
		mu.Lock()
		served[id]++
		mu.Unlock()
		return &llm.Response{Body: []byte(completion)}, nil
	})
	if err := s.gw.SetTable(tab(1, "old", clientKey)); err != nil {
		t.Fatal(err)
	}
	// The swap happens inside the pipeline, between auth and routing:
	// the decoder runs there.
	h := s.cfg.Handler(swapFormat{}, func(r *http.Request, body []byte) (*llm.Request, *llm.Error) {
		if err := s.gw.SetTable(tab(2, "new", "sk-another-key-0123456789")); err != nil {
			t.Error(err)
		}
		return openai.DecodeChat(body)
	})
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody))
	r.Header.Set("Authorization", "Bearer "+clientKey)
	r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if route := w.Header().Get(api.HeaderRoute); !strings.Contains(route, "target=provider/old") {
		t.Fatalf("authenticated against revision 1, routed by another: %s", route)
	}
	if served["old"] != 1 || served["new"] != 0 {
		t.Fatalf("served %v, want old only", served)
	}
	// The next request reads the new table: the old key is refused.
	if w := s.post("/v1/chat/completions", chatBody); w.Code != http.StatusUnauthorized {
		t.Fatalf("after the swap, the dropped key got %d", w.Code)
	}
}

// swapFormat is OpenAI's format for TestOneSnapshotPerRequest's own
// handler.
type swapFormat struct{}

func (swapFormat) WriteError(w http.ResponseWriter, _ *http.Request, e *llm.Error) {
	openai.WriteError(w, e)
}
func (swapFormat) Encode(_ *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	return resp.Body, resp.Usage, nil
}
func (swapFormat) Stream(*http.Request, *llm.Request, *gateway.Result) api.StreamEncoder { return nil }
func (swapFormat) KeepAlive() []byte                                                     { return nil }
func (swapFormat) RateLimitHeaders(http.Header, *limits.Verdict, time.Time)              {}

// TestPanicAnswersInClientFormat makes the upstream adapter panic: each
// surface answers 500 in its own client's error shape, and keeps
// serving.
func TestPanicAnswersInClientFormat(t *testing.T) {
	s := newSurfaces(t, func(string) (*llm.Response, error) { panic("adapter bug") })
	if err := s.gw.SetTable(tab(1, "p", clientKey)); err != nil {
		t.Fatal(err)
	}
	w := s.post("/v1/messages", messagesBody, "anthropic-version", "2023-06-01", api.HeaderRequestID, "req_1")
	var ae struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ae); err != nil || w.Code != http.StatusInternalServerError ||
		ae.Type != "error" || ae.Error.Type != "api_error" || ae.RequestID != "req_1" {
		t.Fatalf("Anthropic client got %d %s, want a 500 in Anthropic's shape", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), "adapter bug") {
		t.Fatalf("the panic's value reached the client: %s", w.Body)
	}

	w = s.post("/v1/chat/completions", chatBody)
	var oe struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &oe); err != nil || w.Code != http.StatusInternalServerError || oe.Error.Type != "server_error" {
		t.Fatalf("OpenAI client got %d %s, want a 500 in OpenAI's shape", w.Code, w.Body)
	}
}

// TestEarlyErrorsInClientFormat checks the errors the pipeline answers
// before any surface code runs (method, auth, empty body) come in the
// client's own shape.
func TestEarlyErrorsInClientFormat(t *testing.T) {
	s := newSurfaces(t, func(string) (*llm.Response, error) { return &llm.Response{Body: []byte(completion)}, nil })
	if err := s.gw.SetTable(tab(1, "p", clientKey)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		w    func() *httptest.ResponseRecorder
		code int
	}{
		{"bad key", func() *httptest.ResponseRecorder {
			return s.post("/v1/messages", messagesBody, "anthropic-version", "2023-06-01", "Authorization", "Bearer sk-wrong")
		}, http.StatusUnauthorized},
		{"empty body", func() *httptest.ResponseRecorder {
			return s.post("/v1/messages", "", "anthropic-version", "2023-06-01")
		}, http.StatusBadRequest},
		{"no version", func() *httptest.ResponseRecorder { return s.post("/v1/messages", messagesBody) }, http.StatusBadRequest},
		{"method", func() *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodGet, "/v1/messages", nil)
			w := httptest.NewRecorder()
			s.mux.ServeHTTP(w, r)
			return w
		}, http.StatusMethodNotAllowed},
	} {
		w := tt.w()
		if w.Code != tt.code || !strings.HasPrefix(w.Body.String(), `{"type":"error","error":{"type":`) {
			t.Errorf("%s: %d %s, want %d in Anthropic's shape", tt.name, w.Code, w.Body, tt.code)
		}
	}
}
