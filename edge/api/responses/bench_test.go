package responses

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// request4K is a ~4 KB Responses request: instructions, two function
// tools, 20 turns as input items and a function call with its output.
func request4K() []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o","stream":true,"max_output_tokens":1024,"instructions":"You are a helpful assistant that answers questions about the weather and travel plans. Keep answers short and precise.",`)
	b.WriteString(`"tools":[{"type":"function","name":"get_weather","description":"Get the current weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}},{"type":"function","name":"book_hotel","description":"Book a hotel","parameters":{"type":"object","properties":{"city":{"type":"string"},"nights":{"type":"integer"}}}}],"input":[`)
	for i := 0; i < 10; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"role":"user","content":"Question %d: what will the weather be like in Paris, Lisbon and Oslo next week, and which city is best for a short walking holiday with museums and good food? Please compare them."},`, i)
		fmt.Fprintf(&b, `{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Answer %d: Lisbon is warmest; Paris has the most museums; Oslo is cool and quiet.","annotations":[]}]}`, i)
	}
	b.WriteString(`,{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"},{"type":"function_call_output","call_id":"call_1","output":"4C"},{"role":"user","content":"Thanks!"}]}`)
	return []byte(b.String())
}

// BenchmarkTranslateRequest: translating a ~4 KB Responses request into
// the canonical one, against the baseline of decoding it with
// encoding/json into generic values.
func BenchmarkTranslateRequest(b *testing.B) {
	body := request4K()
	b.Run("translate", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, e := Decode(body); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("baseline-json-any", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTranslateChunk: one OpenAI-format text chunk, parsed and
// written as a response.output_text.delta event.
func BenchmarkTranslateChunk(b *testing.B) {
	raw := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}`)
	req, e := Decode([]byte(`{"model":"m","input":"hi","stream":true}`))
	if e != nil {
		b.Fatal(e)
	}
	req.ID = "req_0123456789abcdef"
	st := newStreamer(req)
	var c llm.Chunk
	c.SetRaw(raw)
	c.Parse()
	buf := st.chunk(nil, &c)
	b.ResetTimer()
	for b.Loop() {
		c.SetRaw(raw)
		if err := c.Parse(); err != nil {
			b.Fatal(err)
		}
		buf = st.chunk(buf[:0], &c)
		if len(st.text) > 1<<16 {
			st.text = st.text[:0] // the answer's text grows with every chunk; keep memory flat
		}
	}
}
