package openai

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

func adapter(t *testing.T, h http.HandlerFunc, edit func(*table.Provider)) *Adapter {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := table.Provider{ID: "up", Kind: table.KindOpenAI, BaseURL: srv.URL + "/v1", APIKey: "sk-up-secret"}
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

func chatReq(stream, includeUsage bool) *llm.Request {
	body := `{"model":"alias","messages":[{"role":"user","content":"x"}],"vendor_knob":3`
	if stream {
		body += `,"stream":true`
	}
	if includeUsage {
		body += `,"stream_options":{"include_usage":true}`
	}
	body += "}"
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "alias", Stream: stream, IncludeUsage: includeUsage, Body: []byte(body)}
}

func TestBodyRewrite(t *testing.T) {
	tests := []struct {
		name                string
		req                 *llm.Request
		model               string
		wantModel           string
		wantUsageOpt, strip bool
	}{
		{"same model untouched", chatReq(false, false), "alias", "alias", false, false},
		{"renamed", chatReq(false, false), "real-model", "real-model", false, false},
		{"stream gets usage for the gateway", chatReq(true, false), "alias", "alias", true, true},
		{"stream with client usage", chatReq(true, true), "alias", "alias", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, strip, err := body(tt.req, tt.model)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Model         string `json:"model"`
				VendorKnob    int    `json:"vendor_knob"`
				StreamOptions *struct {
					IncludeUsage bool `json:"include_usage"`
				} `json:"stream_options"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if got.Model != tt.wantModel || got.VendorKnob != 3 || strip != tt.strip ||
				(got.StreamOptions != nil && got.StreamOptions.IncludeUsage) != tt.wantUsageOpt {
				t.Fatalf("body %s strip=%v", b, strip)
			}
			if tt.model == tt.req.Model && !tt.req.Stream && string(b) != string(tt.req.Body) {
				t.Fatal("a body that needed no change was re-encoded")
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		status     int
		body       string
		header     string
		want       int
		retryable  bool
		retryAfter time.Duration
		msg        string
	}{
		{429, `{"error":{"message":"Rate limit reached for org-123"}}`, "12", 429, true, 12 * time.Second, "rate limiting"},
		{500, `{"error":{"message":"internal at http://10.1.2.3"}}`, "", 502, true, 0, "failed (status 500)"},
		{503, ``, "", 502, true, 0, "failed (status 503)"},
		{401, `{"error":{"message":"Incorrect API key provided: sk-up-s***"}}`, "", 502, true, 0, "refused Meridian's credentials"},
		{404, `{"error":{"message":"model not found"}}`, "", 502, true, 0, "does not serve this model"},
		{400, `{"error":{"message":"max_tokens is too large","param":"max_tokens","code":"invalid_value"}}`, "", 400, false, 0, "max_tokens is too large"},
		{422, `not json`, "", 400, false, 0, "rejected the request (status 422)"},
	}
	for _, tt := range tests {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
			if tt.header != "" {
				w.Header().Set("Retry-After", tt.header)
			}
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}, nil)
		_, err := a.Do(context.Background(), chatReq(false, false), "m")
		var e *llm.Error
		if !errors.As(err, &e) {
			t.Fatalf("%d: err = %v", tt.status, err)
		}
		if e.Status != tt.want || e.Retryable != tt.retryable || e.RetryAfter != tt.retryAfter || !strings.Contains(e.Message, tt.msg) {
			t.Errorf("%d: got %+v", tt.status, e)
		}
		for _, leak := range []string{"sk-up", "org-123", "10.1.2.3", "127.0.0.1"} {
			if strings.Contains(e.Message, leak) {
				t.Errorf("%d: message leaks %q: %s", tt.status, leak, e.Message)
			}
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	a, err := New(table.Provider{ID: "dead", Kind: "openai", BaseURL: "http://127.0.0.1:1/v1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Do(context.Background(), chatReq(false, false), "m")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || strings.Contains(e.Message, "127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
}

func TestFirstByteTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(p *table.Provider) { p.FirstByteTimeout = 50 * time.Millisecond })
	_, err := a.Do(context.Background(), chatReq(false, false), "m")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 504 || !e.Retryable {
		t.Fatalf("err = %v", err)
	}
}

func TestChunkTimeoutMidStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(p *table.Provider) { p.ChunkTimeout = 50 * time.Millisecond })
	resp, err := a.Do(context.Background(), chatReq(true, true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 504 {
		t.Fatalf("err = %v, want a 504 timeout", err)
	}
}

func TestStreamUsageAndCut(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n")
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n")
		if strings.Contains(r.URL.RawQuery, "cut") || r.Header.Get("X-Request-Id") == "cut" {
			return // no [DONE]
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}, nil)

	req := chatReq(true, false)
	resp, err := a.Do(context.Background(), req, "m")
	if err != nil {
		t.Fatal(err)
	}
	first, err := resp.Stream.Next()
	if err != nil || string(first.Raw) != `{"choices":[{"delta":{"content":"a"}}]}` {
		t.Fatalf("first = %s, %v (usage:null should be gone)", first.Raw, err)
	}
	if _, err := resp.Stream.Next(); err != io.EOF {
		t.Fatalf("usage chunk was not stripped: err = %v", err)
	}
	if u, ok := resp.Stream.Usage(); !ok || u.TotalTokens != 4 {
		t.Fatalf("usage = %+v %v", u, ok)
	}
	resp.Stream.Close()

	req.ID = "cut"
	resp, err = a.Do(context.Background(), req, "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	resp.Stream.Next()
	if _, err := resp.Stream.Next(); !errors.Is(err, llm.ErrStreamCut) {
		t.Fatalf("err = %v, want ErrStreamCut", err)
	}
}

// TestStreamReusesConnection checks that a finished stream hands its
// connection back to the pool: a new connection per stream would add a
// handshake to every time to first token.
func TestStreamReusesConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, "data: [DONE]\n\n")
		w.(http.Flusher).Flush()
		// The body's end arrives after [DONE], in a read of its own.
		time.Sleep(10 * time.Millisecond)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	a, err := New(table.Provider{ID: "up", Kind: table.KindOpenAI, BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 5 {
		resp, err := a.Do(context.Background(), chatReq(true, false), "m")
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := resp.Stream.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		resp.Stream.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 streams used %d connections, want 1", n)
	}
}

func TestBodyRewriteStreamOptions(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"model":"a","stream":true}`, `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"model":"a","stream":true,"stream_options":null}`, `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"model":"a","stream":true,"stream_options":{"x":1}}`, `{"model":"a","stream":true,"stream_options":{"x":1,"include_usage":true}}`},
		{`{"model":"a","stream":true,"stream_options":[1]}`, ``}, // an error, as it always was
	} {
		req := &llm.Request{Op: llm.OpChat, Model: "a", Stream: true, Body: []byte(tt.body)}
		b, strip, err := body(req, "")
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: rewritten to %s", tt.body, b)
			}
			continue
		}
		if err != nil || string(b) != tt.want || !strip {
			t.Errorf("%s: %s %v strip=%v, want %s", tt.body, b, err, strip, tt.want)
		}
	}
	req := &llm.Request{Op: llm.OpChat, Model: "a", Body: []byte(`{"model":"a","messages":[]}`)}
	if b, _, err := body(req, `m"<é`); err != nil || string(b) != `{"model":"m\"<é","messages":[]}` {
		t.Errorf("renamed: %s %v", b, err)
	}
}
