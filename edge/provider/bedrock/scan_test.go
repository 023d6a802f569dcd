package bedrock

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// TestDecodeResponseShapes pins how a Converse answer is read in one
// pass: values of unexpected types are passed over (also after
// whitespace), numbers read as they always were, and a body that is not
// JSON is a 502 whatever it holds.
func TestDecodeResponseShapes(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"spaced", `{ "output" : { "message" : { "role" : "assistant", "content" : [ { "reasoningContent" : { "x" : 1 } }, { "toolUse" : 5 }, { "text" : "Hi" }, 7 ] } }, "usage" : 7, "stopReason" : null }`,
			`"content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`},
		{"text wins over toolUse", `{"output":{"message":{"content":[{"toolUse":{"toolUseId":"t","name":"f"},"text":"a"}]}},"usage":{"inputTokens":"3","outputTokens":2.9,"totalTokens":true}}`,
			`"content":"a"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":1}}`},
		{"tool input compacted", `{"output":{"message":{"content":[{"toolUse":{"toolUseId":"t","name":"f","input":{ "a" : [ 1, "x \" y" ] }}},{"toolUse":{"toolUseId":"u","name":"g","input":[1]}}]}},"stopReason":"tool_use"}`,
			`"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"a\":[1,\"x \\\" y\"]}"}},{"id":"u","type":"function","function":{"name":"g","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}]`},
		{"missing value", `{"output":{"message":{"content":[{"toolUse": }]}}}`, "not a Converse response"},
		{"content not an array", `{"output":{"message":{"content":{"text":"a"}}}}`, "not a Converse response"},
		{"trailing data", `{"output":{"message":{"content":[]}}} x`, "not a Converse response"},
		{"not an object", `[1]`, "not a Converse response"},
	} {
		cc, err := decodeResponse("bed", []byte(tc.body), "id", "m", 1)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			b, _ := json.Marshal(cc)
			got = string(b)
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %s\nwant it to hold %s", tc.name, got, tc.want)
		}
	}
}

// TestStreamEventShapes checks events whose payloads are spaced out,
// carry fields of other types or no JSON at all.
func TestStreamEventShapes(t *testing.T) {
	var b []byte
	b = append(b, encodeFrame("event", "messageStart", `{ "role" : "assistant" }`)...)
	b = append(b, encodeFrame("event", "contentBlockStart", `{ "start" : 5, "contentBlockIndex" : 0 }`)...)
	b = append(b, encodeFrame("event", "contentBlockDelta", `{ "delta" : { "toolUse" : 1, "text" : "Hi" }, "contentBlockIndex" : 0 }`)...)
	b = append(b, encodeFrame("event", "contentBlockDelta", `not JSON`)...)
	b = append(b, encodeFrame("event", "contentBlockStart", `{ "contentBlockIndex" : "1", "start" : { "toolUse" : { "name" : "f", "toolUseId" : "t1" } } }`)...)
	b = append(b, encodeFrame("event", "contentBlockDelta", `{ "contentBlockIndex" : 1.0, "delta" : { "toolUse" : { "input" : "{}" } } }`)...)
	b = append(b, encodeFrame("event", "messageStop", `{ "stopReason" : "max_tokens" }`)...)
	b = append(b, encodeFrame("event", "metadata", `{ "usage" : { "inputTokens" : 3, "outputTokens" : 4 } }`)...)
	s := newStream("bed", memBody{}, bytes.NewReader(b), "chatcmpl-1", "m", 1)
	var got []string
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(c.AppendJSON(nil)))
	}
	want := []string{`"delta":{"role":"assistant","content":""}`, `"delta":{"content":"Hi"}`,
		`"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]`,
		`"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]`, `"finish_reason":"length"`,
		`"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`}
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("chunk %d: %s\nwant it to hold %s", i, got[i], want[i])
		}
	}
}

// TestStreamExceptionMessage checks that an exception's message, read
// from a frame whose buffer is reused, survives in the error.
func TestStreamExceptionMessage(t *testing.T) {
	b := encodeFrame("exception", "validationException", `{ "message" : "bad \u0069nput" }`)
	s := newStream("bed", memBody{}, bytes.NewReader(append(b, encodeFrame("event", "messageStart", `{"role":"xxxxxxxxxxxxxxxxxxxx"}`)...)), "chatcmpl-1", "m", 1)
	_, err := s.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Message != "bad input" {
		t.Fatalf("err = %v", err)
	}
}

// TestParseErrorShapes reads error bodies in both spellings, and what
// can be read of a cut one.
func TestParseErrorShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{"message":"slow down"}`:            "slow down",
		`{ "Message" : "x", "message" : 5 }`: "x",
		`{"Message":"x","message":"y"}`:      "y",
		`{"message":"cut short"`:             "cut short",
		`<html>503</html>`:                   "",
		`{"other": {"message":"nested"}}`:    "",
	} {
		if got := ParseError([]byte(body)).Message; got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}
