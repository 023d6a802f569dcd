package gemini

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// FuzzStream feeds arbitrary bytes to the stream translator. It must
// not panic or loop, and what it emits must be a sane chunk sequence:
// one choice per content chunk, a role first for each candidate, nothing
// after a candidate's finish, a usage chunk last, then io.EOF; or an
// error, which repeats.
func FuzzStream(f *testing.F) {
	f.Add(string(golden(f, "stream.gemini.sse")))
	f.Add(benchStream()[:2000])
	f.Add(ev(`{"candidates":[{"content":{"parts":[{"text":"a"},{"functionCall":{"name":"f","args":{"x":1}}}]},"finishReason":"STOP","index":1}]}`))
	f.Add(ev(`{"error":{"code":503,"status":"UNAVAILABLE"}}`))
	f.Add(ev(`{"promptFeedback":{"blockReason":"SAFETY"}}`))
	f.Add(ev(`[1,2]`) + ev(`{"candidates":"x"}`))
	f.Fuzz(func(t *testing.T, data string) {
		s, c := memStream(data)
		var started, finished [maxCandidates]bool
		sawUsage := false
		for i := 0; ; i++ {
			if i > 4*len(data)+8 {
				t.Fatal("the stream does not end")
			}
			ch, err := s.Next()
			if err == io.EOF {
				if !sawUsage {
					t.Fatal("io.EOF without a usage chunk")
				}
				break
			}
			if err != nil {
				var e *llm.Error
				if !errors.Is(err, llm.ErrStreamCut) && !errors.As(err, &e) {
					t.Fatalf("error of an unknown kind: %v", err)
				}
				if _, again := s.Next(); again != err {
					t.Fatalf("error %v, then %v", err, again)
				}
				break
			}
			if sawUsage {
				t.Fatal("a chunk after the usage chunk")
			}
			if !strings.HasPrefix(ch.ID, "chatcmpl-") || ch.Created == 0 {
				t.Fatalf("chunk names %q %d", ch.ID, ch.Created)
			}
			if !json.Valid(ch.AppendJSON(nil)) {
				t.Fatalf("chunk is not JSON: %s", ch.AppendJSON(nil))
			}
			if len(ch.Choices) == 0 {
				if ch.Usage == nil {
					t.Fatal("a chunk with neither choices nor usage")
				}
				sawUsage = true
				continue
			}
			if len(ch.Choices) != 1 || ch.Usage != nil {
				t.Fatalf("chunk with %d choices", len(ch.Choices))
			}
			cc := ch.Choices[0]
			k := cc.Index
			if k < 0 || k >= maxCandidates || finished[k] {
				t.Fatalf("chunk for candidate %d (finished %v)", k, k >= 0 && k < maxCandidates && finished[k])
			}
			if started[k] == (cc.Role != "") {
				t.Fatalf("candidate %d: role %q on a chunk, started=%v", k, cc.Role, started[k])
			}
			started[k] = true
			if cc.FinishReason != "" {
				finished[k] = true
				if cc.HasContent || len(cc.ToolCalls) > 0 {
					t.Fatal("a finish chunk with content")
				}
			}
			for _, tc := range cc.ToolCalls {
				if tc.ID == "" || !json.Valid([]byte(tc.Arguments)) {
					t.Fatalf("tool call %+v", tc)
				}
			}
		}
		s.Close()
		if !c.closed {
			t.Fatal("Close did not close the call")
		}
	})
}

// FuzzDecodeResponse feeds arbitrary bytes to the non-streamed decoder.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(golden(f, "chat_response.gemini.json"))
	f.Add(golden(f, "blocked.gemini.json"))
	f.Add([]byte(`{"candidates":[{"index":3},{"content":{"parts":[{"functionCall":{"args":[1]}}]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cc, err := decodeResponse(data, "m")
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || (e.Status != 400 && e.Status != 502) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(cc.Choices) == 0 || cc.Usage == nil {
			t.Fatalf("completion %+v", cc)
		}
		for _, ch := range cc.Choices {
			if ch.FinishReason == "" || (ch.Message.Content == nil && len(ch.Message.ToolCalls) == 0) {
				t.Fatalf("choice %+v", ch)
			}
			for _, tc := range ch.Message.ToolCalls {
				if tc.ID == "" || !json.Valid([]byte(tc.Function.Arguments)) {
					t.Fatalf("tool call %+v", tc)
				}
			}
		}
		if _, err := json.Marshal(cc); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzEncodeRequest feeds arbitrary chat request bodies to the
// translator: whatever decodes must translate to valid JSON or to a 400.
// Content is copied as raw JSON, so this is what keeps the body sound.
func FuzzEncodeRequest(f *testing.F) {
	f.Add(golden(f, "chat_request.json"))
	f.Add(benchBody())
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"a\u2028\"b"},{"type":"image_url","image_url":"data:;base64,"}]}],"stop":["x"],"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := &llm.Request{Op: llm.OpChat, Body: body}
		c, err := req.ChatRequest()
		if err != nil {
			return
		}
		out, err := encodeRequest(c, len(body))
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Param == "" {
				t.Fatalf("error %v", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("translation is not JSON:\n%s\nfrom\n%s", out, body)
		}
		if !bytes.Contains(out, []byte(`"contents":[{`)) {
			t.Fatalf("no contents: %s", out)
		}
	})
}

// FuzzParseError feeds arbitrary error bodies to ParseError: whatever
// the upstream (or a proxy before it) answers, it must not panic, and
// the detail must not point into the body, which it outlives.
func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}`))
	f.Add([]byte(`[{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}]`))
	f.Add([]byte(`<html><body>502</body></html>`))
	f.Add([]byte(`{"error":{"message":"cut`))
	f.Fuzz(func(t *testing.T, data []byte) {
		body := bytes.Clone(data) // the engine's bytes must stay as they are
		d := ParseError(body)
		want := d
		want.Message, want.Code = strings.Clone(d.Message), strings.Clone(d.Code)
		clear(body)
		if d != want {
			t.Fatalf("the detail changed with the body: %+v, was %+v", d, want)
		}
	})
}
