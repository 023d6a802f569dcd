package responses

import "testing"

func TestMarkCachedBody(t *testing.T) {
	for _, tt := range []struct {
		body string
		path []string
		want string
	}{
		{`{"id":"r","usage":{"input_tokens":12,"output_tokens":3}}`, []string{"usage"},
			`{"id":"r","usage":{"input_tokens":12,"output_tokens":3,"input_tokens_details":{"cached_tokens":12}}}`},
		{`{"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0,"x":1}}}`, []string{"usage"},
			`{"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":7,"x":1}}}`},
		{`{"type":"response.completed","response":{"usage":{"input_tokens":5.5,"input_tokens_details":null}}}`, []string{"response", "usage"},
			`{"type":"response.completed","response":{"usage":{"input_tokens":5.5,"input_tokens_details":{"cached_tokens":5}}}}`},
		{`{"usage":{"input_tokens":"9"}}`, []string{"usage"}, `{"usage":{"input_tokens":"9","input_tokens_details":{"cached_tokens":9}}}`},
		{`{"usage":{"input_tokens":null}}`, []string{"usage"}, `{"usage":{"input_tokens":null,"input_tokens_details":{"cached_tokens":0}}}`},
		// Unchanged: no input_tokens where the path leads, or not JSON.
		{`{"usage":{"output_tokens":1}}`, []string{"usage"}, `{"usage":{"output_tokens":1}}`},
		{`{"usage":null}`, []string{"usage"}, `{"usage":null}`},
		{`{"response":{"usage":{"input_tokens":1}}}`, []string{"usage"}, `{"response":{"usage":{"input_tokens":1}}}`},
		{`{"usage":{"input_tokens":1}`, []string{"usage"}, `{"usage":{"input_tokens":1}`},
		{`[]`, []string{"usage"}, `[]`},
	} {
		if got := string(markCachedBody([]byte(tt.body), tt.path...)); got != tt.want {
			t.Errorf("markCachedBody(%s, %v) =\n%s\nwant\n%s", tt.body, tt.path, got, tt.want)
		}
	}
}
