package jsonscan

import "testing"

// BenchmarkSet sets usage.input_tokens_details.cached_tokens in a small
// Responses body, as the responses encoder's markCachedBody does.
func BenchmarkSet(b *testing.B) {
	body := []byte(`{"id":"resp_1","object":"response","created_at":1700000000,"status":"completed","model":"gpt-4o",` +
		`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello there.","annotations":[]}]}],` +
		`"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,"total_tokens":15}}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Set(body, []byte("12"), "usage", "input_tokens_details", "cached_tokens"); err != nil {
			b.Fatal(err)
		}
	}
}
