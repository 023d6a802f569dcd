package node

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// seriesCount counts the meridian_* sample lines of a /metrics scrape
// (histogram buckets included), so growth in any labelled family shows.
func seriesCount(scrape string) int {
	n := 0
	for _, l := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(l, "meridian_") {
			n++
		}
	}
	return n
}

// TestUnknownModelsAddNoSeries sends many distinct unknown model names on
// both surfaces: metric labels come only from the routing table, so
// /metrics must not grow a series per name.
func TestUnknownModelsAddNoSeries(t *testing.T) {
	m := startMesh(t, nil)
	// One unknown model first, so the "unknown" series exist before the
	// baseline is taken.
	send := func(i int) {
		model := fmt.Sprintf("no-such-model-%d", i)
		var resp *http.Response
		if i%2 == 0 {
			resp = m.post("/v1/chat/completions", chatBody(model, "hi", ""))
		} else {
			resp = m.post("/v1/messages", `{"model":"`+model+`","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
				"anthropic-version", "2023-06-01")
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("model %s: status %d, want 404", model, resp.StatusCode)
		}
	}
	send(0)
	send(1)
	before := seriesCount(m.metrics(t))
	const n = 1200
	for i := 2; i < n; i++ {
		send(i)
	}
	after := m.metrics(t)
	if got := seriesCount(after); got != before {
		t.Fatalf("%d unknown model names grew /metrics from %d to %d series:\n%s", n, before, got, grep(after, "no-such-model-1"))
	}
	if !strings.Contains(after, `model="unknown"`) {
		t.Fatalf(`unknown models are not counted under model="unknown":\n%s`, grep(after, "meridian_requests_total"))
	}
}

// TestDeepNestingRefusedInClientFormat sends a 4 MiB body of nested
// arrays to the OpenAI surface: it answers 400 in OpenAI's error shape,
// naming the depth limit.
func TestDeepNestingRefusedInClientFormat(t *testing.T) {
	m := startMesh(t, nil)
	head, tail := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":`, `}]}`
	depth := (4<<20 - len(head) - len(tail)) / 2
	body := head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + tail
	resp := m.post("/v1/chat/completions", body)
	b := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if e := decodeError(t, b); e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "nested deeper than 512") {
		t.Fatalf("error %+v", e.Error)
	}
}

// TestStalledStreamReaderIsCut sends a streaming request over a raw
// connection that never reads its answer, against an upstream that
// streams far more than the socket buffers hold. The write deadline cuts
// the stream, the upstream is closed and the request leaves flight.
func TestStalledStreamReaderIsCut(t *testing.T) {
	m := startMesh(t, func(c *config.Config) { c.StreamWriteTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", m.node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := chatBody("gpt-4o-mini", "hi #mock chunks=1000000", `"stream":true`)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)

	m.waitFor("the stream to start", func() bool { return m.node.metrics.RequestsInFlight() == 1 })
	// Filling the socket buffers takes a moment; then the next write
	// waits out the 300ms deadline and the stream ends.
	wait.For(t, 20*time.Second, "the stream of a client that stopped reading to end", func() bool {
		return m.node.metrics.RequestsInFlight() == 0
	})
	if logs := m.logs.String(); !strings.Contains(logs, `"status":"499"`) {
		t.Errorf("the cut stream was not logged as 499:\n%s", logs)
	}
	// The upstream request was cancelled, not left to run to its end.
	select {
	case <-m.mock.Canceled():
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request of the cut stream was not cancelled")
	}
}

// TestMaxInFlightRefusesInClientFormat holds one stream open on an edge
// that serves one request at a time: the next request gets a 503 with
// Retry-After in its client's format, and once the stream ends requests
// are served again.
func TestMaxInFlightRefusesInClientFormat(t *testing.T) {
	m := startMesh(t, func(c *config.Config) { c.MaxInFlight = 1 })
	held := m.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hi #mock chunks=100 chunk_delay_ms=50", `"stream":true`))
	if held.StatusCode != http.StatusOK {
		t.Fatalf("first stream: status %d", held.StatusCode)
	}

	resp := m.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""))
	b := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("OpenAI over the limit: status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if e := decodeError(t, b); e.Error.Type != "server_error" {
		t.Fatalf("OpenAI over the limit: %+v", e.Error)
	}
	resp = m.post("/v1/messages", `{"model":"claude-mock","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, "anthropic-version", "2023-06-01")
	b = readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"type":"error"`) {
		t.Fatalf("Anthropic over the limit: status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}

	held.Body.Close()
	m.waitFor("the held stream to end", func() bool { return m.node.metrics.RequestsInFlight() == 0 })
	resp = m.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""))
	if b := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the stream ended: status %d: %s", resp.StatusCode, b)
	}
}

// TestStalledReaderFreesLocalSlot streams from the local engine to a
// client that never reads: the write deadline cuts the stream, and the
// engine's slot, the only one, is given back, so the next request is
// served locally.
func TestStalledReaderFreesLocalSlot(t *testing.T) {
	m := startLocalMesh(t, func(c *config.Config) {
		c.StreamWriteTimeout = 300 * time.Millisecond
		c.Local.NumParallel, c.Local.Queue = 1, 0
	})
	conn, err := net.Dial("tcp", m.node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := chatBody("tiny", "hello", `"stream":true,"max_tokens":1000000`)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)

	m.waitFor("the local slot to fill", func() bool { return m.node.engine.Stats().Running == 1 })
	// The connection stays open and unread; only the deadline can end
	// the stream.
	m.waitFor("the stalled stream to give its slot back", func() bool {
		return m.node.engine.Stats().Running == 0 && m.node.metrics.RequestsInFlight() == 0
	})
	resp := m.post("/v1/chat/completions", chatBody("tiny", "hello", `"max_tokens":4`))
	if b := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("X-Meridian-Route"), "target=local") {
		t.Fatalf("after the cut: status %d, route %q: %s", resp.StatusCode, resp.Header.Get("X-Meridian-Route"), b)
	}
	if logs := m.logs.String(); !strings.Contains(logs, `"status":"499"`) {
		t.Errorf("the cut stream was not logged as 499")
	}
}

// TestPanicAnswersInClientFormat makes a handler behind the node's
// middleware panic: the client gets a 500 in its own format, Anthropic's
// for Anthropic's SDKs and path, OpenAI's otherwise, and the panic is
// logged without reaching the client.
func TestPanicAnswersInClientFormat(t *testing.T) {
	m := startMesh(t, nil)
	h := m.node.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug sk-panic-secret") }))
	for _, tc := range []struct {
		path, version string
		anth          bool
	}{
		{"/v1/models", "2023-06-01", true},
		{"/v1/messages/count_tokens", "", true},
		{"/v1/models", "", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.version != "" {
			r.Header.Set("Anthropic-Version", tc.version)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		body := w.Body.String()
		if w.Code != http.StatusInternalServerError || strings.Contains(body, "sk-panic-secret") {
			t.Fatalf("%s: %d %s", tc.path, w.Code, body)
		}
		if got := strings.HasPrefix(body, `{"type":"error","error":{"type":"api_error"`); got != tc.anth {
			t.Errorf("%s (anthropic-version %q): %s, want Anthropic's shape: %v", tc.path, tc.version, body, tc.anth)
		}
		if !tc.anth && !strings.HasPrefix(body, `{"error":{"message":"internal error","type":"server_error"`) {
			t.Errorf("%s: %s, want OpenAI's shape", tc.path, body)
		}
	}
	if !strings.Contains(m.logs.String(), "handler panic") {
		t.Error("the panic was not logged")
	}
}
