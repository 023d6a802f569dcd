package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

func TestRetryAfter(t *testing.T) {
	if d := RetryAfter("7"); d != 7*time.Second {
		t.Fatalf("seconds: %v", d)
	}
	d := RetryAfter(time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat))
	if d < 25*time.Second || d > 31*time.Second {
		t.Fatalf("date: %v", d)
	}
	for _, bad := range []string{"", "soon", "-3"} {
		if RetryAfter(bad) != 0 {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestStatusError(t *testing.T) {
	h := http.Header{"Retry-After": {"4"}}
	for _, tt := range []struct {
		status    int
		d         ErrorDetail
		want      int
		typ       string
		retryable bool
	}{
		{429, ErrorDetail{}, 429, llm.TypeRateLimit, true},
		{529, ErrorDetail{}, 503, llm.TypeOverloaded, true},
		{500, ErrorDetail{Type: llm.TypeOverloaded}, 503, llm.TypeOverloaded, true},
		{503, ErrorDetail{Message: "secret internals"}, 502, llm.TypeUpstream, true},
		{401, ErrorDetail{Message: "bad key sk-123"}, 502, llm.TypeUpstream, true},
		{404, ErrorDetail{}, 502, llm.TypeUpstream, true},
		{413, ErrorDetail{}, 413, llm.TypeInvalidRequest, false},
		{400, ErrorDetail{Message: "max_tokens too big", Param: "max_tokens"}, 400, llm.TypeInvalidRequest, false},
	} {
		e := StatusError("p", tt.status, h, tt.d, nil)
		if e.Status != tt.want || e.Type != tt.typ || e.Retryable != tt.retryable {
			t.Errorf("%d: %+v", tt.status, e)
		}
		if tt.status >= 401 && tt.status != 400 && tt.status != 413 && strings.Contains(e.Message, tt.d.Message) && tt.d.Message != "" {
			t.Errorf("%d: upstream message leaked: %q", tt.status, e.Message)
		}
	}
	if e := StatusError("p", 400, h, ErrorDetail{Message: "max_tokens too big", Param: "max_tokens"}, nil); e.Message != "max_tokens too big" || e.Param != "max_tokens" {
		t.Errorf("400 lost the upstream's explanation: %+v", e)
	}
	if e := StatusError("p", 429, h, ErrorDetail{}, nil); e.RetryAfter != 4*time.Second {
		t.Errorf("Retry-After lost: %v", e.RetryAfter)
	}
}

// TestSilenceWatchdog checks that an upstream that stops sending is cut
// after the silence bound, and reported as a retryable 504.
func TestSilenceWatchdog(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c := NewClient(table.Provider{})
	call, err := Send(context.Background(), c, Request{Provider: "p", Method: "POST", URL: srv.URL, Header: http.Header{}, Silence: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close(false)
	_, err = call.ReadAll()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusGatewayTimeout || !e.Retryable {
		t.Fatalf("err = %v", err)
	}
}

func TestClientCancelIsNotAnUpstreamError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	call, err := Send(ctx, NewClient(table.Provider{}), Request{Provider: "p", Method: "POST", URL: srv.URL, Header: http.Header{}, Silence: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close(false)
	cancel()
	if _, err := call.ReadAll(); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
