package gemini

import (
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
)

func TestParseError(t *testing.T) {
	tests := []struct {
		name, body string
		want       upstream.ErrorDetail
	}{
		{"plain", `{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}`,
			upstream.ErrorDetail{Message: "Quota exceeded.", Code: "RESOURCE_EXHAUSTED"}},
		{"in an array", `[{"error":{"code":400,"message":"Bad \"x\".","status":"INVALID_ARGUMENT"}},{"error":{"message":"second"}}]`,
			upstream.ErrorDetail{Message: `Bad "x".`, Code: "INVALID_ARGUMENT"}},
		{"key invalid after the status", `{"error":{"status":"INVALID_ARGUMENT","details":[{"@type":"x"},{"reason":"API_KEY_INVALID"}],"message":"m"}}`,
			upstream.ErrorDetail{Message: "m", Code: codeKeyInvalid}},
		{"key invalid before the status", `{"error":{"details":[{"reason":"API_KEY_INVALID"}],"status":"INVALID_ARGUMENT"}}`,
			upstream.ErrorDetail{Code: codeKeyInvalid}},
		{"details as an object", `{"error":{"status":"INVALID_ARGUMENT","details":{"a":{"reason":"API_KEY_INVALID"}}}}`,
			upstream.ErrorDetail{Code: codeKeyInvalid}},
		{"fields of the wrong type", `{"error":{"message":5,"status":null,"details":"x"}}`, upstream.ErrorDetail{}},
		{"error not an object", `{"error":"nope"}`, upstream.ErrorDetail{}},
		{"cut off", `{"error":{"message":"half","status":"UNAVAIL`, upstream.ErrorDetail{Message: "half"}},
		{"not JSON", `<html><body>502 Bad Gateway</body></html>`, upstream.ErrorDetail{}},
		{"empty", ``, upstream.ErrorDetail{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.body)
			got := ParseError(b)
			clear(b) // the detail must not point into the body
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDecodeResponseLenient pins how answers that bend Gemini's schema
// read: these are the readings the adapter has always given them.
func TestDecodeResponseLenient(t *testing.T) {
	cc, err := decodeResponse([]byte(`{"candidates":[
		{"index":"1","content":{"parts":[{"text":"a","thought":"true"},{"text":"b","thought":0},{"text":7},{"text":"c"}]}},
		{"index":2.9,"content":{"parts":{"x":{"text":"d"}}},"finishReason":"MAX_TOKENS"},
		7],
		"usageMetadata":{"promptTokenCount":"10","toolUsePromptTokenCount":2.5,"candidatesTokenCount":3,"thoughtsTokenCount":true},
		"responseId":"r1"}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		idx     int
		content string
		finish  string
	}
	want := []got{{1, "bc", llm.FinishStop}, {2, "d", llm.FinishLength}, {2, "", llm.FinishStop}}
	if len(cc.Choices) != len(want) {
		t.Fatalf("%d choices", len(cc.Choices))
	}
	for i, ch := range cc.Choices {
		if g := (got{ch.Index, *ch.Message.Content, ch.FinishReason}); g != want[i] {
			t.Errorf("choice %d: %+v, want %+v", i, g, want[i])
		}
	}
	if u := *cc.Usage; u != (llm.Usage{PromptTokens: 12, CompletionTokens: 4, TotalTokens: 16}) {
		t.Errorf("usage %+v", u)
	}
	if cc.ID != "chatcmpl-r1" {
		t.Errorf("id %q", cc.ID)
	}

	// Not an array: one empty candidate, as before.
	cc, err = decodeResponse([]byte(`{"candidates":null}`), "m")
	if err != nil || len(cc.Choices) != 1 || *cc.Choices[0].Message.Content != "" {
		t.Fatalf("candidates null: %+v %v", cc, err)
	}
}

// TestCallIDsFollowResponseID: Gemini writes responseId after the
// candidates, and the call IDs made for the candidates' function calls
// must follow from it all the same.
func TestCallIDsFollowResponseID(t *testing.T) {
	const cand = `"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}},{"functionCall":{"name":"g","id":"own"}},{"functionCall":{"name":"h"}}]}}]`
	last, err := decodeResponse([]byte(`{`+cand+`,"responseId":"rid"}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	first, err := decodeResponse([]byte(`{"responseId":"rid",`+cand+`}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	ids := newCallIDs("rid")
	want := []string{ids.next(), "own", ids.next()}
	for _, cc := range []*llm.ChatCompletion{last, first} {
		calls := cc.Choices[0].Message.ToolCalls
		if len(calls) != 3 {
			t.Fatalf("%d calls", len(calls))
		}
		for i, c := range calls {
			if c.ID != want[i] {
				t.Errorf("call %d: id %q, want %q", i, c.ID, want[i])
			}
		}
	}
}

// TestFunctionCallArgs: args are compacted; anything but an object is
// no arguments.
func TestFunctionCallArgs(t *testing.T) {
	cc, err := decodeResponse([]byte(`{"candidates":[{"content":{"parts":[
		{"functionCall":{"name":"a","args":{ "x" : [1, "y z"] , "w":{} }}},
		{"functionCall":{"name":"b","args":[1]}},
		{"functionCall":{"name":"c"}},
		{"functionCall":"d"}]}}],"responseId":"r"}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, c := range cc.Choices[0].Message.ToolCalls {
		args = append(args, c.Function.Name+" "+c.Function.Arguments)
	}
	want := []string{`a {"x":[1,"y z"],"w":{}}`, "b {}", "c {}"}
	if strings.Join(args, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q, want %q", args, want)
	}
}
