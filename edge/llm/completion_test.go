package llm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// answer2K is a ~2 KB non-streamed chat answer: a text choice with
// logprobs, a tool-call choice, usage and fields Meridian ignores.
func answer2K() []byte {
	var b strings.Builder
	b.WriteString(`{"id":"chatcmpl-AbC123","object":"chat.completion","created":1733212800,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"`)
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&b, "Sentence %d of the answer says something about the weather in Lisbon. ", i)
	}
	b.WriteString(`","refusal":null,"annotations":[]},"logprobs":{"content":[{"token":"Sentence","logprob":-0.01,"bytes":[83,101],"top_logprobs":[]}]},"finish_reason":"stop"},`)
	b.WriteString(`{"index":1,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lisbon\",\"unit\":\"c\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],`)
	b.WriteString(`"usage":{"prompt_tokens":412,"completion_tokens":180,"total_tokens":592,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default","system_fingerprint":"fp_50cad350e4"}`)
	return []byte(b.String())
}

// BenchmarkChatCompletion: decoding a ~2 KB non-streamed answer, as
// every translating surface does for an OpenAI-format upstream, against
// the baseline of encoding/json into the same types.
func BenchmarkChatCompletion(b *testing.B) {
	body := answer2K()
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			r := Response{Body: body}
			if _, err := r.ChatCompletion(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var c ChatCompletion
			if err := json.Unmarshal(body, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
