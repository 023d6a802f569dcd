package bedrock

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// benchBody is the ~4 KB chat request the other adapters' benchmarks
// translate: a system prompt, a few turns, a tool call and its result,
// and two tools.
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
	b, _ := json.Marshal(map[string]any{"model": "anthropic.claude-3-5-haiku-20241022-v1:0", "messages": msgs, "tools": tools, "temperature": 0.7, "max_tokens": 1024, "stream": true})
	return b
}

// BenchmarkTranslateRequest decodes the client's ~4 KB body and
// translates it into a Converse body (budget: 20 µs).
func BenchmarkTranslateRequest(b *testing.B) {
	body := benchBody()
	b.ReportAllocs()
	for b.Loop() {
		chat, err := chatReq(string(body), false).ChatRequest()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeRequest(chat, len(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTranslateChunk decodes one contentBlockDelta frame and
// translates it into a canonical chunk.
func BenchmarkTranslateChunk(b *testing.B) {
	one := encodeFrame("event", "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":" token"},"p":"abcdefgh"}`)
	const n = 4096
	data := bytes.Repeat(one, n)
	r := bytes.NewReader(data)
	s := newStream("bed", memBody{}, r, "chatcmpl-1", "m", 1)
	s.roleSent = true
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			b.StopTimer()
			r.Reset(data)
			s.r.Reset(r)
			i = 0
			b.StartTimer()
		}
		if _, err := s.Next(); err != nil && err != io.EOF {
			b.Fatal(err)
		}
		i++
	}
}
