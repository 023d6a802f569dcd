package jobs

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	good := `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}`
	l, err := ParseLine(1, []byte(good))
	if err != nil || l.CustomID != "a" || l.Model != "m" || l.URL != "/v1/embeddings" || !json.Valid(l.Body) {
		t.Fatalf("good line: %+v %v", l, err)
	}
	for _, c := range []struct{ line, param string }{
		{`[]`, ""},
		{`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m"}} {}`, ""},
		{`{"custom_id":"","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`, "custom_id"},
		{`{"custom_id":7,"method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`, ""},
		{`{"custom_id":"` + strings.Repeat("x", MaxCustomID+1) + `","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`, "custom_id"},
		{`{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{"model":"m"}}`, "method"},
		{`{"custom_id":"a","method":"POST","url":"/v1/files","body":{"model":"m"}}`, "url"},
		{`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":"m"}`, "body"},
		{`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":3}}`, "body"},
		{`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}}`, "body.model"},
		{`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","stream":1}}`, "body.stream"},
		{"{\"custom_id\":\"\xff\"}", ""},
	} {
		_, err := ParseLine(4, []byte(c.line))
		if err == nil || err.Line != 4 || err.Param != c.param || err.Message == "" {
			t.Errorf("%.60s: %+v", c.line, err)
		}
	}
	if _, err := ParseLine(1, []byte(strings.Replace(good, `"input":"x"`, `"input":"x","stream":false`, 1))); err != nil {
		t.Errorf("stream false: %v", err)
	}
}

func TestParseFile(t *testing.T) {
	f := "\n" + strings.TrimSpace(string(jsonl(3, "m"))) + "\n\n"
	lines, err := ParseFile([]byte(f), 10)
	if err != nil || len(lines) != 3 || lines[2].Index != 2 || lines[2].CustomID != "req-2" {
		t.Fatalf("%+v %v", lines, err)
	}
	if _, err := ParseFile(jsonl(3, "m"), 2); err == nil || err.Line != 3 {
		t.Fatalf("over max lines: %v", err)
	}
}

// FuzzParseLine: any input yields a line or a numbered error, never a
// panic, and an accepted line holds what a worker needs.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","stream":false}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"m","stream":true}}`,
		`{"custom_id":null}`, `{}`, `[`, `"x"`, "{\"custom_id\":\"\xff\"}", `{"body":{"model":{"x":1}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLine(9, b)
		if err != nil {
			if err.Line != 9 || err.Message == "" {
				t.Fatalf("error without line or message: %+v", err)
			}
			return
		}
		if l.CustomID == "" || l.Model == "" || !knownEndpoint(l.URL) || !json.Valid(l.Body) || l.Body[0] != '{' {
			t.Fatalf("accepted a line a worker cannot run: %+v", l)
		}
		if bytes.IndexByte(b, '\n') >= 0 {
			return // a file's lines hold no newline
		}
		if _, err := ParseFile(b, 1); err != nil {
			t.Fatalf("the line parses alone but not as a file: %v", err)
		}
	})
}
