package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

func addFiles(f *testing.F, pattern string) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzStream feeds arbitrary bytes to the stream translator and checks
// the canonical sequence: a role first, tool call indexes that count
// calls, at most one finish, the usage chunk last, and io.EOF only after
// it; every other end is a cut or an *llm.Error. Every chunk must
// encode to valid JSON.
func FuzzStream(f *testing.F) {
	addFiles(f, "*.sse")
	f.Add(benchStream())
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
	f.Add([]byte("data: {\"type\":\"message_stop\"}\n\n"))
	f.Add([]byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1023,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1023,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\\\"}}\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &memCall{}
		s := newStream("claude", m, bytes.NewReader(data), "m")
		var (
			chunks, calls int
			finished      bool
			usage         bool
			buf           []byte
		)
		for {
			c, err := s.Next()
			if err != nil {
				var e *llm.Error
				switch {
				case err == io.EOF:
					if !usage || !finished {
						t.Fatalf("EOF without finish (%v) and usage (%v)", finished, usage)
					}
				case errors.Is(err, llm.ErrStreamCut), errors.As(err, &e):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				if again, _ := s.Next(); again != nil {
					t.Fatal("a chunk after the end")
				}
				break
			}
			if usage {
				t.Fatal("a chunk after the usage chunk")
			}
			chunks++
			if len(c.Choices) == 0 {
				if c.Usage == nil || !finished {
					t.Fatalf("chunk %d has no choices and no usage, or comes before the finish", chunks)
				}
				usage = true
			} else {
				ch := &c.Choices[0]
				if (chunks == 1) != (ch.Role == llm.RoleAssistant) {
					t.Fatalf("chunk %d role %q", chunks, ch.Role)
				}
				if finished {
					t.Fatal("a delta after the finish")
				}
				finished = ch.FinishReason != ""
				for _, tc := range ch.ToolCalls {
					switch {
					case tc.ID != "" || tc.Name != "":
						// The first delta of a call starts a new index...
						if tc.Index != calls {
							t.Fatalf("call %d starts as index %d", calls, tc.Index)
						}
						calls++
					case tc.Index >= calls:
						// ...and later ones name a started call.
						t.Fatalf("arguments for call %d of %d", tc.Index, calls)
					}
				}
			}
			buf = c.AppendJSON(buf[:0])
			if !json.Valid(buf) {
				t.Fatalf("chunk is not valid JSON: %s", buf)
			}
		}
		s.Close()
		if !m.closed || m.drained != usage {
			t.Fatalf("closed %v drained %v after usage %v", m.closed, m.drained, usage)
		}
	})
}

// FuzzQuickDelta checks the delta fast path against the general one:
// whenever it accepts an event, it must read what event.read reads.
func FuzzQuickDelta(f *testing.F) {
	f.Add(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`)
	f.Add(`{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"a\"b\\c\n\u00e9"}}`)
	f.Add(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}`)
	f.Add(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`)
	f.Add(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\"}}`)
	f.Fuzz(func(t *testing.T, data string) {
		var quick, slow event
		var s jsonscan.Scanner
		if !quick.quick(&s, []byte(data)) {
			return
		}
		if slow.read(&s, []byte(data)); quick != slow {
			t.Fatalf("quick %+v != read %+v", quick, slow)
		}
	})
}

// FuzzDecodeMessage checks that any answer body gives either an error
// the gateway can report or one well-formed choice with usage.
func FuzzDecodeMessage(f *testing.F) {
	addFiles(f, "messages_response.json")
	f.Add([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	f.Add([]byte(`{"id":"m","content":[{"type":"tool_use","id":"t","name":"n"}],"stop_reason":"max_tokens"}`))
	f.Add([]byte(`{"content":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeMessage("claude", data, "m", 1)
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status < 500 {
				t.Fatalf("err = %v, want a 5xx *llm.Error", err)
			}
			return
		}
		if len(c.Choices) != 1 || c.Usage == nil || c.Choices[0].FinishReason == "" {
			t.Fatalf("completion %+v", c)
		}
		m := c.Choices[0].Message
		if m.Content == nil && len(m.ToolCalls) == 0 {
			t.Fatal("neither content nor tool calls")
		}
		for _, tc := range m.ToolCalls {
			if !json.Valid([]byte(tc.Function.Arguments)) {
				t.Fatalf("arguments %q are not JSON", tc.Function.Arguments)
			}
		}
		if _, err := json.Marshal(c); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzEncodeRequest checks the hand-written encoder: any chat request
// it accepts becomes valid JSON with the fields Anthropic requires.
func FuzzEncodeRequest(f *testing.F) {
	addFiles(f, "chat_request.json")
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi"}],"stop":"x","tool_choice":"none","tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}`))
	f.Add([]byte(`{"messages":[{"role":"tool","tool_call_id":"a.b","content":[{"type":"text","text":"\ud800"}]}]}`))
	f.Add(benchBody(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decoded as production decodes it, whichever decoder that is.
		c, err := (&llm.Request{Op: llm.OpChat, Body: data}).ChatRequest()
		if err != nil {
			return
		}
		b, err := encodeRequest(c, "claude-x", true)
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Param == "" {
				t.Fatalf("err = %#v, want a 400 naming a field", err)
			}
			return
		}
		var got struct {
			Model     string            `json:"model"`
			MaxTokens *int              `json:"max_tokens"`
			Messages  []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %s: %v", b, err)
		}
		if got.Model != "claude-x" || got.MaxTokens == nil || len(got.Messages) == 0 {
			t.Fatalf("missing required fields: %s", b)
		}
	})
}

// FuzzRawStream feeds arbitrary bytes to the passthrough stream: every
// event comes out with its name and its data as they were, io.EOF comes
// only right after message_stop, and every other end is a cut or an
// *llm.Error.
func FuzzRawStream(f *testing.F) {
	addFiles(f, "*.sse")
	f.Add(benchStream())
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
	f.Add([]byte("data: {\"type\":\"message_stop\"}\n\n"))
	f.Add([]byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":-1}}\ndata: x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newRawStream("claude", &memCall{}, bytes.NewReader(data))
		last := ""
		for {
			c, err := s.Next()
			if err != nil {
				var e *llm.Error
				switch {
				case err == io.EOF:
					if last != "message_stop" {
						t.Fatalf("EOF after %q, not message_stop", last)
					}
				case errors.Is(err, llm.ErrStreamCut), errors.As(err, &e):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				if again, _ := s.Next(); again != nil {
					t.Fatal("a chunk after the end")
				}
				break
			}
			if c.Event == "" {
				t.Fatalf("a chunk with no event name: %q", c.Raw)
			}
			for _, line := range bytes.Split(c.Raw, []byte("\n")) {
				if !bytes.Contains(data, line) {
					t.Fatalf("event %q with data %q that the input does not hold", c.Event, c.Raw)
				}
			}
			last = c.Event
		}
		s.Usage()
		s.Close()
	})
}

// FuzzParseErrorVertex reads error bodies from Vertex AI in front of
// Claude: Google's shape or Anthropic's, or neither.
func FuzzParseErrorVertex(f *testing.F) {
	f.Add([]byte(`{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}`))
	f.Add([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	f.Add([]byte(`[{"error":{"code":400}}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := parseErrorVertex(b)
		if a := parseError(b); a.Type != "" && d.Type != a.Type {
			t.Fatalf("Anthropic's type %q was lost: %+v", a.Type, d)
		}
	})
}

// FuzzVertexBody turns encoded Messages bodies into Vertex AI's: valid
// JSON, with anthropic_version and without a model.
func FuzzVertexBody(f *testing.F) {
	f.Add("claude-sonnet-4@20250514", "hello")
	f.Add("m\"odel\\", "\u2028")
	f.Fuzz(func(t *testing.T, model, text string) {
		c := &llm.ChatRequest{Messages: []llm.Message{{Role: llm.RoleUser, Content: llm.TextContent(text)}}}
		b, err := encodeRequest(c, model, false)
		if err != nil {
			return
		}
		out := vertexBody(b, model)
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("vertex body %s: %v", out, err)
		}
		if _, ok := got["model"]; ok || string(got["anthropic_version"]) != `"`+vertexVersion+`"` {
			t.Fatalf("vertex body %s", out)
		}
	})
}

// FuzzCompactJSON checks the tool-input compaction against
// encoding/json's on every value the scanner accepts.
func FuzzCompactJSON(f *testing.F) {
	f.Add([]byte(`{ "a" : [1, 2],` + "\n" + `"b":"x y \" z" }`))
	f.Add([]byte(`"a\\" `))
	f.Add([]byte(`null`))
	f.Add([]byte(" [ {} , [ ] , \"\\u0020\" ] \t"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := jsonscan.New(data)
		raw := s.Raw()
		if s.End() != nil {
			return
		}
		got := compactJSON(raw)
		var want bytes.Buffer
		if err := json.Compact(&want, raw); err != nil {
			return // the scanner and encoding/json differ only past MaxDepth
		}
		if string(raw) == "null" {
			want.Reset()
			want.WriteString("{}")
		}
		if got != want.String() {
			t.Fatalf("compactJSON(%q) = %q, want %q", raw, got, want.String())
		}
	})
}

// FuzzInputTokens reads count_tokens answers: never a panic, and for a
// body encoding/json reads as an object with an integer count, that
// count. Only bodies that name input_tokens once, without escapes, are
// compared: the walk stops at the first, where encoding/json's last
// wins, and keys are matched as written.
func FuzzInputTokens(f *testing.F) {
	f.Add([]byte(`{"input_tokens":12}`))
	f.Add([]byte(`{"model":"x","input_tokens":-1e3}`))
	f.Add([]byte(`{"input_tokens":"12"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, ok := inputTokens(data)
		var v map[string]json.RawMessage
		if bytes.Count(data, []byte(`input_tokens`)) != 1 || bytes.IndexByte(data, '\\') >= 0 {
			return
		}
		if _, deep := jsonscan.TooDeep(data, jsonscan.MaxDepth); deep || json.Unmarshal(data, &v) != nil {
			return
		}
		var want int64
		if err := json.Unmarshal(v["input_tokens"], &want); err != nil {
			return
		}
		if !ok || n != want {
			t.Fatalf("inputTokens(%s) = %d %v, want %d", data, n, ok, want)
		}
	})
}

// FuzzHasType checks the bracket-counting lookup of a schema's "type"
// against a checking walk, on every object the scanner accepts.
func FuzzHasType(f *testing.F) {
	f.Add(`{"properties":{"type":{"type":"string"}},"required":["type"],"type":"object"}`)
	f.Add(`{"properties":{"type":1},"x":"type"}`)
	f.Add(`{ "a\"type" : [ "type" ] , "type" : null }`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, schema string) {
		s := jsonscan.New([]byte(schema))
		want := false
		if s.Peek() != jsonscan.Object {
			return
		}
		s.Object(func(k []byte) bool {
			want = want || string(k) == "type"
			return true
		})
		if s.End() != nil {
			return
		}
		if got := hasType(schema); got != want {
			t.Fatalf("hasType(%s) = %v, want %v", schema, got, want)
		}
	})
}
