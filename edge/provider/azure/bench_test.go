package azure

import (
	"encoding/json"
	"testing"
)

// BenchmarkParseError: reading a content-filter refusal, against the
// baseline of decoding it with encoding/json into generic values.
func BenchmarkParseError(b *testing.B) {
	body := []byte(`{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}`)
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if d := ParseError(body); d.Code != "content_filter" {
				b.Fatal(d)
			}
		}
	})
	b.Run("baseline-json-any", func(b *testing.B) {
		for b.Loop() {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
