package llm

import (
	"encoding/json"
	"strings"
	"testing"
)

// BenchmarkMessageParts: a message's content parts (text and images)
// read by Parts, against encoding/json into []ContentPart as a baseline.
func BenchmarkMessageParts(b *testing.B) {
	m := Message{Content: json.RawMessage(`[{"type":"text","text":"What is in these two pictures, and which was taken first?"},` +
		`{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}},` +
		`{"type":"image_url","image_url":{"url":"https://example.com/b.png","detail":null}},` +
		`{"type":"text","text":"Answer in one sentence.","cache_control":null}]`)}
	b.Run("one-pass", func(b *testing.B) {
		b.SetBytes(int64(len(m.Content)))
		for b.Loop() {
			if _, err := m.Parts(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(m.Content)))
		for b.Loop() {
			var parts []ContentPart
			if err := json.Unmarshal(m.Content, &parts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeChatRequestTools: a request heavy in tools and tool
// calls, the objects DecodeChatRequest walks below its messages, against
// encoding/json as a baseline.
func BenchmarkDecodeChatRequestTools(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","messages":[{"role":"user","content":"Plan my week."}`)
	for i := 0; i < 8; i++ {
		sb.WriteString(`,{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}`)
		sb.WriteString(`,{"role":"tool","tool_call_id":"call_1","content":"sunny"},{"role":"tool","tool_call_id":"call_2","content":"rain"}`)
	}
	sb.WriteString(`],"tools":[`)
	for i := 0; i < 8; i++ {
		if i > 0 {
			sb.WriteString(`,`)
		}
		sb.WriteString(`{"type":"function","function":{"name":"get_weather","description":"Weather for a city","strict":true,"parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}`)
	}
	sb.WriteString(`]}`)
	benchDecode(b, []byte(sb.String()))
}

// benchDecode runs DecodeChatRequest on body, and encoding/json on it as
// the same-run baseline.
func benchDecode(b *testing.B, body []byte) {
	b.Run("one-pass", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := DecodeChatRequest(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var c ChatRequest
			if err := json.Unmarshal(body, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
