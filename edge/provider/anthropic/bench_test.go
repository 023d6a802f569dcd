package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// benchBody is a chat request of about 4 KB: a system prompt, a
// conversation with a tool round trip, and two tools.
func benchBody(tb testing.TB) []byte {
	sentence := "The quick brown fox jumps over the lazy dog while the gateway counts tokens. "
	req := map[string]any{
		"model": "claude-alias",
		"messages": []any{
			map[string]any{"role": "system", "content": "You are a careful assistant for a logistics company. " + strings.Repeat(sentence, 14)},
			map[string]any{"role": "user", "content": "Where is parcel 7781? " + strings.Repeat(sentence, 6)},
			map[string]any{"role": "assistant", "content": "Let me look that up.", "tool_calls": []any{
				map[string]any{"id": "call_a1", "type": "function", "function": map[string]any{"name": "track_parcel", "arguments": `{"parcel_id":"7781","include_history":true}`}},
			}},
			map[string]any{"role": "tool", "tool_call_id": "call_a1", "content": `{"status":"in transit","hub":"Rotterdam","eta":"2025-03-02T10:00:00Z","history":["Shenzhen","Dubai","Rotterdam"]}`},
			map[string]any{"role": "assistant", "content": "Parcel 7781 is in transit at the Rotterdam hub. " + strings.Repeat(sentence, 4)},
			map[string]any{"role": "user", "content": "Can you reroute it to Antwerp and tell me the new ETA? " + strings.Repeat(sentence, 6)},
		},
		"tools": []any{
			map[string]any{"type": "function", "function": map[string]any{
				"name": "track_parcel", "description": "Look up a parcel's status, current hub and estimated arrival.",
				"parameters": map[string]any{"type": "object", "properties": map[string]any{
					"parcel_id":       map[string]any{"type": "string", "description": "The parcel number printed on the label."},
					"include_history": map[string]any{"type": "boolean", "description": "Whether to list the hubs passed so far."},
				}, "required": []string{"parcel_id"}},
			}},
			map[string]any{"type": "function", "function": map[string]any{
				"name": "reroute_parcel", "description": "Send a parcel to another destination hub and return the new estimated arrival.",
				"parameters": map[string]any{"type": "object", "properties": map[string]any{
					"parcel_id": map[string]any{"type": "string"},
					"hub":       map[string]any{"type": "string", "enum": []string{"Antwerp", "Rotterdam", "Hamburg", "Le Havre"}},
					"priority":  map[string]any{"type": "string", "enum": []string{"standard", "express"}},
				}, "required": []string{"parcel_id", "hub"}},
			}},
		},
		"tool_choice":           "auto",
		"max_completion_tokens": 1024,
		"temperature":           0.3,
		"stop":                  []string{"END"},
		"user":                  "customer-991",
	}
	b, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestBenchBodySize(t *testing.T) {
	if n := len(benchBody(t)); n < 3800 || n > 4400 {
		t.Fatalf("benchmark request is %d bytes, want about 4 KB", n)
	}
}

// BenchmarkEncodeRequest measures translating a decoded 4 KB chat
// request into a Messages body: the cost this adapter adds per request.
func BenchmarkEncodeRequest(b *testing.B) {
	body := benchBody(b)
	req := &llm.Request{Op: llm.OpChat, Model: "claude-alias", Body: body} // as the OpenAI surface hands it over
	c, err := req.ChatRequest()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeRequest(c, "claude-sonnet-4-5", true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTranslateRequest adds decoding the OpenAI body into the
// typed request (req.ChatRequest, shared code), which a request that
// arrived on the OpenAI surface pays once.
func BenchmarkTranslateRequest(b *testing.B) {
	body := benchBody(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := &llm.Request{Op: llm.OpChat, Model: "claude-alias", Body: body} // as the OpenAI surface hands it over
		c, err := req.ChatRequest()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeRequest(c, "claude-sonnet-4-5", true); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStream is a 200-event Messages stream: text deltas, then a tool
// call whose arguments arrive in fragments.
func benchStream() []byte {
	var w bytes.Buffer
	ev := func(name, data string) { fmt.Fprintf(&w, "event: %s\ndata: %s\n\n", name, data) }
	ev("message_start", `{"type":"message_start","message":{"id":"msg_01Bench","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`)
	ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	ev("ping", `{"type": "ping"}`)
	for i := range 142 {
		ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word %d, \"quoted\" "}}`, i))
	}
	ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
	ev("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01Bench","name":"reroute_parcel","input":{}}}`)
	for i := range 50 {
		ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"k%d\": \"v\", "}}`, i))
	}
	ev("content_block_stop", `{"type":"content_block_stop","index":1}`)
	ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":380}}`)
	ev("message_stop", `{"type":"message_stop"}`)
	return w.Bytes()
}

const benchEvents = 200

func TestBenchStreamShape(t *testing.T) {
	if n := bytes.Count(benchStream(), []byte("\nevent: ")) + 1; n != benchEvents {
		t.Fatalf("benchmark stream has %d events, want %d", n, benchEvents)
	}
}

// BenchmarkTranslateChunk measures translating a 200-event stream read from
// memory; ns/event is the per-chunk cost, SSE parsing included.
func BenchmarkTranslateChunk(b *testing.B) {
	data := benchStream()
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(data)
		s := newStream("claude", &memCall{}, r, "m")
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEvents, "ns/chunk")
}

// BenchmarkDecodeMessage measures translating a non-streamed answer.
func BenchmarkDecodeMessage(b *testing.B) {
	data := readFile(b, "messages_response.json")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeMessage("claude", data, "m", 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPassthroughChunk reads the same stream as
// BenchmarkTranslateChunk the way an Anthropic client's stream is read
// (rawStream): events are relayed as they came and only the two that
// carry usage are parsed. Before, such a stream was translated here and
// translated back by the Anthropic surface.
func BenchmarkPassthroughChunk(b *testing.B) {
	data := benchStream()
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(data)
		s := newRawStream("claude", &memCall{}, r)
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEvents, "ns/chunk")
}
