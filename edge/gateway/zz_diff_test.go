package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func FuzzDiffTrace(f *testing.F) {
	f.Add([]byte(`{"max_tokens":1.5,"temperature":0.7,"model":"m"}`))
	f.Add([]byte(`{"max_tokens":"1","max_completion_tokens":12345678901234567890,"temperature":1e400}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var x bodySampling
		x.read(b)
		m := answerModel(b)
		if !gjson.ValidBytes(b) {
			return
		}
		r := gjson.GetManyBytes(b, "max_tokens", "max_completion_tokens", "temperature")
		if (r[0].Type == gjson.Number) != (x.has&hasMaxTokens != 0) || (r[0].Type == gjson.Number && r[0].Int() != x.maxTokens) {
			t.Fatalf("%q max_tokens %v %d", b, r[0], x.maxTokens)
		}
		if (r[1].Type == gjson.Number) != (x.has&hasMaxCompletion != 0) || (r[1].Type == gjson.Number && r[1].Int() != x.maxCompletion) {
			t.Fatalf("%q max_completion %v %d", b, r[1], x.maxCompletion)
		}
		if (r[2].Type == gjson.Number) != (x.has&hasTemperature != 0) || (r[2].Type == gjson.Number && r[2].Float() != x.temperature) {
			t.Fatalf("%q temp %v %v", b, r[2], x.temperature)
		}
		om := gjson.GetBytes(b, "model")
		want := ""
		if om.Type == gjson.String {
			want = string([]rune(om.Str))
		}
		if string([]rune(m)) != want {
			t.Fatalf("%q model %q %q", b, m, want)
		}
	})
}

func BenchmarkEmbedModel(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[`)
	for i := 0; i < 1536; i++ {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "%.8f", float64(i%97)/97-0.5)
	}
	sb.WriteString(`]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`)
	body := []byte(sb.String())
	b.Run("jsonscan", func(b *testing.B) {
		for b.Loop() {
			answerModel(body)
		}
	})
	b.Run("gjson", func(b *testing.B) {
		for b.Loop() {
			gjson.GetBytes(body, "model")
		}
	})
}
