package openai

import (
	"bytes"
	"testing"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// FuzzReaders feeds upstream bytes to every reader here: none may
// panic, and on valid JSON the skim (member) must find what a checked
// jsonscan walk finds: the first member of the name, its bytes exact.
func FuzzReaders(f *testing.F) {
	f.Add([]byte(`{"error":{"message":"m","code":"c","param":null,"type":"t"}}`))
	f.Add([]byte(`{"error":"boom","message":"x"}`))
	f.Add([]byte(`{"id":"a\"]}","choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":"2","total_tokens":3.5}}`))
	f.Add([]byte(`{"type":"response.completed","response":{"usage":{"input_tokens":4,"output_tokens":5}},"usage":{"x":[1,{"y":"\\"}]}}`))
	f.Add([]byte(`{"type":"error","code":"c","error":{"message":"e"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseError(b)
		answerUsage(b)
		readEvent(b, false)
		readEvent(b, true)
		_, valid := responseObject(b)
		got, ok := jsonscan.Member(b, "usage")
		if !valid {
			return
		}
		var want []byte
		found := false
		s := jsonscan.New(b)
		s.Object(func(k []byte) bool {
			if string(k) == "usage" && !found {
				want, found = s.Raw(), true
			}
			return true
		})
		if ok != found || !bytes.Equal(got, want) {
			t.Fatalf("%q: skimmed %q %v, walked to %q %v", b, got, ok, want, found)
		}
		if ok && got[0] == '{' {
			readUsage(jsonscan.New(got))
		}
	})
}
