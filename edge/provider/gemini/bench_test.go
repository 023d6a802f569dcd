package gemini

import (
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// benchBody is a ~4 KB chat request: a system prompt, a few turns, a
// tool call and its result, and two tools.
func benchBody() []byte {
	para := strings.Repeat("The quick brown fox jumps over the lazy dog while the gateway translates. ", 5)
	msgs := []map[string]any{
		{"role": "system", "content": "You are a careful assistant for a travel company. " + para + para},
		{"role": "user", "content": "Plan a weekend in Lisbon. " + para},
		{"role": "assistant", "content": "Here is a first draft. " + para},
		{"role": "user", "content": []map[string]any{{"type": "text", "text": "What will the weather be? " + para}}},
		{"role": "assistant", "content": nil, "tool_calls": []map[string]any{{"id": "call_1", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": `{"city":"Lisbon","days":2}`}}}},
		{"role": "tool", "tool_call_id": "call_1", "content": `{"forecast":[{"day":"sat","sky":"sunny","high":24},{"day":"sun","sky":"cloudy","high":21}]}`},
		{"role": "user", "content": "Great, and restaurants near the river? " + para},
	}
	tools := []map[string]any{
		{"type": "function", "function": map[string]any{"name": "get_weather", "description": "Weather forecast for a city.",
			"parameters": json.RawMessage(`{"type":"object","properties":{"city":{"type":"string","description":"City name"},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city"],"additionalProperties":false}`)}},
		{"type": "function", "function": map[string]any{"name": "search_places", "description": "Find places of a kind near a location.",
			"parameters": json.RawMessage(`{"type":"object","properties":{"near":{"type":"string"},"kind":{"type":"string","enum":["restaurant","museum","park"]},"limit":{"type":"integer"}},"required":["near","kind"]}`)}},
	}
	b, _ := json.Marshal(map[string]any{"model": "gemini-2.5-flash", "messages": msgs, "tools": tools, "temperature": 0.7, "max_tokens": 1024, "stream": true})
	return b
}

// BenchmarkEncodeRequest measures translating a decoded 4 KB chat
// request into Gemini's format (budget: 20 µs).
func BenchmarkEncodeRequest(b *testing.B) {
	body := benchBody()
	req := &llm.Request{Op: llm.OpChat, Body: body} // as the OpenAI surface hands it over
	c, err := req.ChatRequest()
	if err != nil {
		b.Fatal(err)
	}
	out, err := encodeRequest(c, len(body))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(body)), "in-bytes")
	b.ReportMetric(float64(len(out)), "out-bytes")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := encodeRequest(c, len(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTranslateRequest adds decoding the client's body into
// the typed request, which the OpenAI path never pays and this one does.
func BenchmarkTranslateRequest(b *testing.B) {
	body := benchBody()
	b.ReportAllocs()
	for b.Loop() {
		req := &llm.Request{Op: llm.OpChat, Body: body} // as the OpenAI surface hands it over
		c, err := req.ChatRequest()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeRequest(c, len(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStream is 200 events as Gemini sends them: text increments, the
// last with a finish reason and usage.
func benchStream() string {
	var sb strings.Builder
	for i := range 200 {
		sb.WriteString(`data: {"candidates": [{"content": {"parts": [{"text": "token `)
		sb.WriteString(strconv.Itoa(i))
		sb.WriteString(` and a few more words of text"}],"role": "model"},"index": 0`)
		if i == 199 {
			sb.WriteString(`,"finishReason": "STOP"`)
		}
		sb.WriteString(`}],"usageMetadata": {"promptTokenCount": 182,"candidatesTokenCount": `)
		sb.WriteString(strconv.Itoa(i * 7))
		sb.WriteString(`,"totalTokenCount": `)
		sb.WriteString(strconv.Itoa(182 + i*7))
		sb.WriteString(`},"modelVersion": "gemini-2.5-flash","responseId": "p9SmaJ3xBfO8nvgPqKiJmAk"}` + "\r\n\r\n")
	}
	return sb.String()
}

// BenchmarkTranslateChunk measures translating a 200-event stream read from
// memory; ns/chunk is the per-chunk cost (budget: 1 µs).
func BenchmarkTranslateChunk(b *testing.B) {
	data := benchStream()
	r := strings.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	chunks := 0
	for b.Loop() {
		r.Reset(data)
		s := newStream(&memConn{}, r, "gem", "m")
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			chunks++
		}
		s.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(chunks), "ns/chunk")
}

// BenchmarkDecodeResponse measures a non-streamed answer with text and
// two tool calls.
func BenchmarkDecodeResponse(b *testing.B) {
	body := golden(b, "chat_response.gemini.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeResponse(body, "m"); err != nil {
			b.Fatal(err)
		}
	}
}
