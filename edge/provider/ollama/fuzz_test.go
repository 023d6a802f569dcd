package ollama

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// FuzzStream feeds arbitrary bodies to the stream reader. It must not
// panic, must end in io.EOF only after a finish chunk and a usage chunk,
// and must fail only with an *llm.Error or a cut stream.
func FuzzStream(f *testing.F) {
	for _, name := range []string{"chat_stream_text.ollama.ndjson", "chat_stream_tools.ollama.ndjson"} {
		b := golden(f, name)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte(`{"error":"boom"}` + "\n"))
	f.Add([]byte(`{"done":true}`))
	f.Add([]byte("\n\n{}\n[1]\n"))
	f.Add([]byte(`{"message":{"content":"a\u0000\"b","tool_calls":[{"function":{"name":"x","arguments":"{}"}},{}]},"done":false}` + "\n"))
	req := &llm.Request{Op: llm.OpChat, Model: "m", Stream: true, Chat: &llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: llm.TextContent("hi")}}}}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := memAdapter(body).Do(context.Background(), req, "m")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Stream.Close()
		lines := strings.Count(string(body), "\n") + 1
		var last, beforeLast []byte
		calls := 0
		for n := 0; ; n++ {
			if n > lines+3 {
				t.Fatalf("%d chunks from %d lines", n, lines)
			}
			c, err := resp.Stream.Next()
			if err == io.EOF {
				if n < 3 || !strings.Contains(string(last), `"choices":[],"usage":{`) || !strings.Contains(string(beforeLast), `"delta":{},"logprobs":null,"finish_reason":"`) {
					t.Fatalf("clean end without finish and usage chunks:\n%s\n%s", beforeLast, last)
				}
				if _, ok := resp.Stream.Usage(); !ok {
					t.Fatal("clean end without usage")
				}
				if _, err := resp.Stream.Next(); err != io.EOF {
					t.Fatalf("after EOF: %v", err)
				}
				return
			}
			if err != nil {
				var e *llm.Error
				if !errors.As(err, &e) && !errors.Is(err, llm.ErrStreamCut) {
					t.Fatalf("err = %v (%T)", err, err)
				}
				return
			}
			if !strings.HasPrefix(c.ID, "chatcmpl-") || len(c.Choices) > 1 {
				t.Fatalf("chunk %+v", c)
			}
			if n == 0 && (len(c.Choices) != 1 || c.Choices[0].Role != llm.RoleAssistant) {
				t.Fatalf("first chunk without the role: %+v", c)
			}
			if len(c.Choices) == 1 {
				for _, tc := range c.Choices[0].ToolCalls {
					if tc.Index != calls || tc.ID == "" {
						t.Fatalf("tool call %+v, want index %d with an id", tc, calls)
					}
					calls++
				}
			}
			js := c.AppendJSON(nil)
			if !json.Valid(js) {
				t.Fatalf("chunk is not JSON: %s", js)
			}
			beforeLast, last = last, js
		}
	})
}

// FuzzDecodeChat feeds arbitrary bodies to the non-streamed decoder.
func FuzzDecodeChat(f *testing.F) {
	f.Add(golden(f, "chat_response_text.ollama.json"))
	f.Add(golden(f, "chat_response_tools.ollama.json"))
	f.Add([]byte(`{"message":{"tool_calls":[{"function":{"arguments":"x"}},5]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		cc, err := decodeChat(body, "m")
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 502 {
				t.Fatalf("err = %v", err)
			}
			return
		}
		if len(cc.Choices) != 1 || cc.Usage == nil || cc.Model == "" {
			t.Fatalf("completion %+v", cc)
		}
		ch := cc.Choices[0]
		switch ch.FinishReason {
		case llm.FinishStop, llm.FinishLength, llm.FinishToolCalls, llm.FinishContentFilter:
		default:
			t.Fatalf("finish %q", ch.FinishReason)
		}
		if ch.Message.Content == nil && len(ch.Message.ToolCalls) == 0 {
			t.Fatal("an answer with neither content nor tool calls")
		}
		for _, tc := range ch.Message.ToolCalls {
			if tc.ID == "" || tc.Type != "function" {
				t.Fatalf("tool call %+v", tc)
			}
		}
		if _, err := json.Marshal(cc); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzEncodeChat checks that every request the adapter accepts becomes
// valid JSON: content, schemas and arguments are copied unparsed.
func FuzzEncodeChat(f *testing.F) {
	f.Add(golden(f, "chat_request.openai.json"))
	f.Add(request4K())
	f.Add([]byte(`{"messages":[{"role":"tool","tool_call_id":"x","content":[{"type":"text","text":"\u2028"}]}],"stop":"\n"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := &llm.Request{Op: llm.OpChat, Model: "m", Body: body}
		c, err := req.ChatRequest()
		if err != nil {
			return
		}
		out, err := encodeChat(nil, c, "m", true)
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("err = %v", err)
			}
			return
		}
		var got struct {
			Stream   *bool
			Messages []json.RawMessage
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if got.Stream == nil || !*got.Stream || len(got.Messages) != len(c.Messages) {
			t.Fatalf("body %s", out)
		}
	})
}

// FuzzDecodeEmbed checks that accepted embeddings answers become valid
// OpenAI JSON in both encodings.
func FuzzDecodeEmbed(f *testing.F) {
	f.Add(golden(f, "embed_response.ollama.json"))
	f.Add([]byte(`{"embeddings":[[1e400,-0],[]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, b64 := range []bool{false, true} {
			out, _, err := decodeEmbed(body, "m", b64)
			if err != nil {
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("not JSON: %s", out)
			}
		}
	})
}

// FuzzEncodeEmbed translates arbitrary embeddings requests: a 400 or a
// JSON body that carries the input unchanged.
func FuzzEncodeEmbed(f *testing.F) {
	f.Add(golden(f, "embed_request.openai.json"))
	f.Add([]byte(`{"input":["a","b"],"encoding_format":"base64","dimensions":2.0}`))
	f.Add([]byte(`{"input":"a","encoding_format":null,"dimensions":1e400}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, _, err := encodeEmbedFor(body, "m", Engine{KeepAlive: -1})
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("err = %v", err)
			}
			return
		}
		var got struct{ Input json.RawMessage }
		if err := json.Unmarshal(out, &got); err != nil || len(got.Input) == 0 {
			t.Fatalf("not an embed body (%v): %s", err, out)
		}
	})
}

// FuzzParseError reads arbitrary error bodies.
func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"error":"model not found"}`))
	f.Add([]byte(`{"error":{"message":"x","type":"y"}}`))
	f.Add([]byte(`{"error":"cut`))
	f.Fuzz(func(t *testing.T, b []byte) { ParseError(b) })
}
