package llm

import (
	"encoding/json"
	"fmt"
	"reflect"
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

// sameAsEncodingJSON checks that decoding body gives what
// encoding/json gives: both fail, or both succeed with equal answers.
func sameAsEncodingJSON(t *testing.T, body []byte) {
	t.Helper()
	var want ChatCompletion
	werr := json.Unmarshal(body, &want)
	r := Response{Body: body}
	got, err := r.ChatCompletion()
	if (err != nil) != (werr != nil) {
		t.Fatalf("%q: error %v, encoding/json's %v", body, err, werr)
	}
	if err != nil {
		if e := AsError(err); e.Status != 502 || e.Type != TypeUpstream || !e.Retryable || e.Message != "upstream answer is not a chat completion" {
			t.Fatalf("%q: error %+v", body, e)
		}
		return
	}
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", body, *got, want)
	}
}

func TestChatCompletionDecode(t *testing.T) {
	for _, body := range []string{
		string(answer2K()),
		`null`,
		`{}`,
		` {"choices":[]} `,
		`{"choices":null,"usage":null,"id":null,"created":null}`,
		`{"choices":[null,{"message":null,"logprobs":null,"index":null}]}`,
		`{"choices":[{"message":{"content":null,"refusal":"no","tool_calls":[]}}]}`,
		`{"choices":[{"message":{"content":"a\u00e9\ud83d\ude00\ud800x\"","tool_calls":[null,{"function":null}]}}]}`,
		`{"ID":"x","Model":"m","CHOICES":[{"Index":2,"FINISH_REASON":"stop"}],"mod\u0065l":"esc","\u212a":1}`,
		`{"choices":[{"index":1,"message":{"role":"a"}},{"index":2}],"choices":[{"message":{"content":"c"}}]}`,
		`{"usage":{"prompt_tokens":1},"usage":{"total_tokens":3}}`,
		`{"unknown":{"deep":[1,2,{"x":null}]},"choices":[{"extra":true,"logprobs":{"a":[1]}}]}`,
		"{\"model\":\"\xff\xfeok\"}",
		// Each of these fails, as it does with encoding/json.
		``, `[]`, `"x"`, `1`, `{"id":1}`, `{"created":1.5}`, `{"created":1e3}`, `{"created":"1"}`,
		`{"created":99999999999999999999}`, `{"choices":{}}`, `{"choices":[1]}`, `{"choices":[{"message":[]}]}`,
		`{"choices":[{"message":{"content":1}}]}`, `{"choices":[{"message":{"tool_calls":[{"function":{"name":2}}]}}]}`,
		`{"usage":{"total_tokens":-1.0}}`, `{"usage":[]}`, `{"id":"x"} {}`, `{"id":"x",}`, `{"id":"x"`, `{"id":tru}`,
		`{"choices":[{"index":"0"}]}`, `{"object":false}`,
	} {
		sameAsEncodingJSON(t, []byte(body))
	}
}

func FuzzChatCompletion(f *testing.F) {
	f.Add(answer2K())
	f.Add([]byte(`{"choices":[{"index":1,"message":{"role":"a","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}}],"choices":[null]}`))
	f.Add([]byte(`{"Usage":{"Prompt_Tokens":1},"usage":null,"choices":[{"message":{"content":null,"refusal":"r"}}]}`))
	f.Add([]byte(`{"created":-0,"model":"\ud83d","choices":[{"logprobs":[1,{"a":"b"}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		sameAsEncodingJSON(t, body)
	})
}
