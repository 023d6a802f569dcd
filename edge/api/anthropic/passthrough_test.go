package anthropic_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/table"
)

// upstreamEvents is an Anthropic stream as Anthropic writes it, with
// fields Meridian does not translate (thinking, cache counts) and a key
// order of its own, so any translation would show.
const upstreamEvents = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_up1","type":"message","role":"assistant","model":"claude-up","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":1}}}` + "\n\n" +
	"event: content_block_start\n" +
	`data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}` + "\n\n" +
	"event: ping\n" +
	`data: {"type": "ping"}` + "\n\n" +
	"event: content_block_delta\n" +
	`data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}` + "\n\n" +
	"event: content_block_stop\n" +
	`data: {"type":"content_block_stop","index":0}` + "\n\n" +
	"event: content_block_start\n" +
	`data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: content_block_delta\n" +
	`data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello \u00e9"}}` + "\n\n" +
	"event: content_block_stop\n" +
	`data: {"type":"content_block_stop","index":1}` + "\n\n" +
	"event: message_delta\n" +
	`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}` + "\n\n" +
	"event: message_stop\n" +
	`data: {"type":"message_stop"}` + "\n\n"

const upstreamMessage = `{"model":"claude-up","id":"msg_up2","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":7,"service_tier":"standard"}}`

// fakeAnthropic is an Anthropic upstream that records what it receives
// and answers with fixed bytes.
type fakeAnthropic struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (f *fakeAnthropic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, b)
	f.mu.Unlock()
	var req struct{ Stream bool }
	if json.Unmarshal(b, &req) == nil && req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(upstreamEvents))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(upstreamMessage))
}

func (f *fakeAnthropic) last() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[len(f.bodies)-1]
}

// TestAnthropicPassthrough sends an Anthropic client's requests to an
// Anthropic upstream: the upstream receives the client's bytes (only the
// model renamed, when the route renames it) and the client receives the
// upstream's bytes unchanged, streamed or not, with usage still counted.
func TestAnthropicPassthrough(t *testing.T) {
	up := &fakeAnthropic{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw := gateway.New(gateway.Config{Logger: quiet})
	defer gw.Close()
	err := gw.SetTable(&table.Table{
		Providers: []table.Provider{{ID: "anth", Kind: table.KindAnthropic, BaseURL: srv.URL + "/v1"}},
		Models:    []table.Model{{ID: "same"}, {ID: "renamed"}},
		Routes: []*table.Route{
			{Model: "same", Targets: []table.Target{{Provider: "anth"}}},
			{Model: "renamed", Targets: []table.Target{{Provider: "anth", Model: "claude-up"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	mux := http.NewServeMux()
	anthropic.New(api.Config{Gateway: gw, NoAuth: true, MaxBodyBytes: 1 << 20,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}).Register(mux)
	post := func(body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
		r.Header.Set("anthropic-version", "2023-06-01")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}

	// Fields Meridian has no canonical form for must reach the upstream.
	client := `{"model":"same", "max_tokens":64,"thinking":{"type":"enabled","budget_tokens":32},"metadata":{"user_id":"u1"},"messages":[{"role":"user","content":"hi"}],"stream":true}`
	w := post(client)
	if w.Code != http.StatusOK {
		t.Fatalf("stream: %d %s", w.Code, w.Body)
	}
	if got := w.Body.String(); got != upstreamEvents {
		t.Fatalf("the client's stream differs from the upstream's:\n got %q\nwant %q", got, upstreamEvents)
	}
	if got := up.last(); string(got) != client {
		t.Fatalf("the upstream got %s, want the client's bytes %s", got, client)
	}
	if !strings.Contains(logs.String(), `"tokens_in":15,"tokens_out":7`) {
		t.Fatalf("a passed-through stream's usage was not counted: %s", logs.String())
	}

	client = `{"model":"renamed","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	w = post(client)
	if w.Code != http.StatusOK || w.Body.String() != upstreamMessage {
		t.Fatalf("message: %d\n got %s\nwant %s", w.Code, w.Body, upstreamMessage)
	}
	if got, want := string(up.last()), strings.Replace(client, `"renamed"`, `"claude-up"`, 1); got != want {
		t.Fatalf("the upstream got %s, want %s", got, want)
	}
}
