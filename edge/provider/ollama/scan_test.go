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

// TestDecodeChatShapes pins how a chat answer is read in one pass:
// values of unexpected types are passed over (also after whitespace),
// numbers read as they always were, and a body that is not JSON is a
// 502 naming that.
func TestDecodeChatShapes(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"spaced", `{ "model" : 5, "message" : { "role" : "assistant", "content" : "Hi", "tool_calls" : 7, "thinking" : "hm" }, "done" : "yes", "done_reason" : "length", "prompt_eval_count" : "3", "eval_count" : 2.9 }`,
			`"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`},
		{"tool calls", `{"message":{"content":"","tool_calls":[{"id":"c1","function":{"name":"f","arguments":{ "a" : 1 }}},{"function":{"name":"g","arguments":"{\"b\":2}"}},{"function": 5},3]}}`,
			`"arguments":"{ \"a\" : 1 }"}},{"id":"call_`},
		{"missing value", `{"message":{"content": }}`, "not valid JSON"},
		{"trailing data", `{"message":{}} {}`, "not valid JSON"},
		{"error before the fault", `{"error":"boom",`, "not valid JSON"},
		{"error null", `{"error":null,"message":{}}`, "is an error"},
	} {
		cc, err := decodeChat([]byte(tc.body), "m")
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
	cc, err := decodeChat([]byte(`{"message":{"tool_calls":[{"function":{"name":"f","arguments":{"a":1}}},{"function":{"name":"g","arguments":"x"}},5]}}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	calls := cc.Choices[0].Message.ToolCalls
	if len(calls) != 3 || calls[0].Function.Arguments != `{"a":1}` || calls[1].Function.Arguments != "x" || calls[2].Function.Arguments != "{}" || calls[2].ID == "" {
		t.Fatalf("calls %+v", calls)
	}
}

// TestDecodeEmbedShapes checks embeddings answers the walk must refuse
// or read past.
func TestDecodeEmbedShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{ "embeddings" : [ [ 1, -0.5 ] , [ ] ], "model" : "e", "prompt_eval_count" : 2 }`: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,-0.5]},{"object":"embedding","index":1,"embedding":[]}],"model":"e","usage":{"prompt_tokens":2,"total_tokens":2}}`,
		`{"embeddings":[[1,"x"]]}`:     "an embeddings answer",
		`{"embeddings":[5,[1]]}`:       "an embeddings answer",
		`{"embeddings":[5,[1]],"x": }`: "valid JSON",
		`{"embeddings":{}}`:            "an embeddings answer",
		`{"model":"e"}`:                "an embeddings answer",
		`[[1]]`:                        "an embeddings answer",
		`{"embeddings":[[1]]`:          "valid JSON",
	} {
		out, _, err := decodeEmbed([]byte(body), "m", false)
		got := string(out)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: got %s, want %s", body, got, want)
		}
	}
	if _, _, err := decodeEmbed([]byte(`{"embeddings":[[1e39]]}`), "m", true); err == nil {
		t.Error("a float32 overflow was encoded as base64")
	}
}

// TestEncodeEmbedShapes checks the embeddings request fields read in
// one pass.
func TestEncodeEmbedShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{ "input" : [ "a" , "b" ], "dimensions" : 2.0, "encoding_format" : null }`: `{"model":"m","input":[ "a" , "b" ],"dimensions":2}`,
		`{"input":"a","dimensions":1e2}`:                                            `"dimensions":100}`,
		`{"input":"a","dimensions":1.5}`:                                            "'dimensions' must be a positive integer",
		`{"input":"a","dimensions":"2"}`:                                            "'dimensions' must be a positive integer",
		`{"input":"a","encoding_format":5}`:                                         "Invalid encoding_format.",
		`{"input":"a","encoding_format":"hex"}`:                                     "Invalid encoding_format 'hex'",
		`{"input":[1,2]}`:                                                           "'input' must be a string",
		`{"input":"a",}`:                                                            "not valid JSON",
		`["input"]`:                                                                 "'input' must be a string",
	} {
		out, _, err := encodeEmbedFor([]byte(body), "m", Engine{})
		got := string(out)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: got %s, want %s", body, got, want)
		}
	}
}

// TestResponseFormatShapes checks response_format read in one pass.
func TestResponseFormatShapes(t *testing.T) {
	for rf, want := range map[string]string{
		`{ "type" : "json_schema", "json_schema" : { "name" : "x", "schema" : { "type" : "object" } } }`: `,"format":{ "type" : "object" }`,
		`{"type":"json_schema","json_schema":{"schema":5}}`:                                              `,"format":"json"`,
		`{"json_schema":5,"type":"json_object"}`:                                                         `,"format":"json"`,
		`{"type":"text"}`:                                                                                ``,
		`{"type":1.50}`:                                                                                  "Invalid response_format type '1.5'",
		`{"type":{"a":1}}`:                                                                               `Invalid response_format type '{"a":1}'`,
		`"json"`:                                                                                         "Invalid response_format type ''",
	} {
		out, err := appendFormat(nil, []byte(rf))
		got := string(out)
		if err != nil {
			got = err.Error()
		}
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("%s: got %s, want %s", rf, got, want)
		}
	}
}

// TestStreamLineShapes streams lines with spaced-out and oddly typed
// fields, and a line with a fault after done: the walk checks every
// line in full.
func TestStreamLineShapes(t *testing.T) {
	body := `{ "model" : "llama" , "created_at" : 5, "message" : { "content" : "Hi", "images" : null }, "done" : "no" }` + "\n" +
		`{"message":{"tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"done":false}` + "\n" +
		`{ "done" : true, "done_reason" : "stop", "prompt_eval_count" : 3, "eval_count" : 4 }` + "\n"
	resp, err := memAdapter([]byte(body)).Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		c, err := resp.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(c.AppendJSON(nil)))
	}
	resp.Stream.Close()
	want := []string{`"model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}`,
		`"tool_calls":[{"index":0,"id":"call_`, `"finish_reason":"tool_calls"`, `"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`}
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("chunk %d: %s\nwant it to hold %s", i, got[i], want[i])
		}
	}

	resp, err = memAdapter([]byte(`{"done":true,"eval_count":}`+"\n")).Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !strings.Contains(e.Message, "malformed") {
		t.Fatalf("err = %v", err)
	}
}

// TestParseErrorShapes reads Ollama's and OpenAI's error shapes, and
// what can be read of a cut body.
func TestParseErrorShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{"error":"model not found"}`:                   "model not found",
		`{ "error" : { "type" : 5, "message" : "x" } }`: "x",
		`{"error":5}`:          "",
		`{"error":"cut short`:  "",
		`{"error":"kept","x":`: "kept",
		`not json`:             "",
	} {
		if got := ParseError([]byte(body)).Message; got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}
