package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// BenchmarkRequestAttributes: the span attributes of an OpenAI-format
// request that was never decoded into types (~4 KB, the sampling
// fields last), against the baseline of decoding the body with
// encoding/json into generic values.
func BenchmarkRequestAttributes(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","messages":[`)
	for i := 0; i < 20; i++ {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"role":"user","content":"Question %d: what will the weather be like in Paris, Lisbon and Oslo next week, and which city is best?"},{"role":"assistant","content":"Answer %d: Lisbon is warmest."}`, i, i)
	}
	sb.WriteString(`],"stream":true,"max_tokens":1024,"temperature":0.7}`)
	req := &llm.Request{Op: llm.OpChat, Model: "gpt-4o", Body: []byte(sb.String())}
	b.Run("attributes", func(b *testing.B) {
		b.SetBytes(int64(len(req.Body)))
		for b.Loop() {
			if kv := RequestAttributes(req); len(kv) != 3 {
				b.Fatal(kv)
			}
		}
	})
	b.Run("baseline-json-any", func(b *testing.B) {
		b.SetBytes(int64(len(req.Body)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(req.Body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
