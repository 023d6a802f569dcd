package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
)

// BenchmarkParseError: reading an OpenAI error body, against the
// baseline of decoding it with encoding/json into generic values.
func BenchmarkParseError(b *testing.B) {
	body := []byte(`{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 1500.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`)
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if d := ParseError(body); d.Code != "rate_limit_exceeded" {
				b.Fatal(d)
			}
		}
	})
	b.Run("baseline-json-any", func(b *testing.B) {
		for b.Loop() {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// streamEvents is the end of a streamed answer whose usage the gateway
// switched on: text chunks, the finish, the usage chunk and [DONE].
func streamEvents() []byte {
	var b bytes.Buffer
	for i := 0; i < 8; i++ {
		b.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n")
	}
	b.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n")
	b.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":412,"completion_tokens":180,"total_tokens":592,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// responsesEvents is a Responses stream without event names, so every
// event's type is read from its data: deltas, then response.completed.
func responsesEvents() []byte {
	var b bytes.Buffer
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&b, `data: {"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" word"}`+"\n\n", i+4)
	}
	b.WriteString(`data: {"type":"response.completed","sequence_number":12,"response":{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4o","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":" word word word word word word word word","annotations":[]}]}],"usage":{"input_tokens":412,"input_tokens_details":{"cached_tokens":0},"output_tokens":180,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":592}}}` + "\n\n")
	return b.Bytes()
}

// BenchmarkStream: reading the end of a chat stream (usage stripped
// for the client) and a Responses stream, chunk by chunk, against the
// baseline of decoding every event's data with encoding/json into
// generic values.
func BenchmarkStream(b *testing.B) {
	for _, tc := range []struct {
		name   string
		events []byte
		open   func(r io.Reader) llm.Stream
	}{
		{"chat", streamEvents(), func(r io.Reader) llm.Stream {
			return &stream{call: &upstream.Call{}, r: sse.NewReader(r), stripUsage: true}
		}},
		{"responses", responsesEvents(), func(r io.Reader) llm.Stream {
			return &responsesStream{provider: "up", call: &upstream.Call{}, r: sse.NewReader(r)}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.events)))
			var r bytes.Reader
			for b.Loop() {
				r.Reset(tc.events)
				st := tc.open(&r)
				for {
					if _, err := st.Next(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
				if _, ok := st.Usage(); !ok {
					b.Fatal("no usage")
				}
			}
		})
		b.Run(tc.name+"-baseline-json-any", func(b *testing.B) {
			b.SetBytes(int64(len(tc.events)))
			var r bytes.Reader
			for b.Loop() {
				r.Reset(tc.events)
				sr := sse.NewReader(&r)
				for {
					ev, err := sr.Next()
					if err != nil {
						break
					}
					var v any
					json.Unmarshal(ev.Data, &v)
				}
			}
		})
	}
}
