package gateway

import (
	"testing"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// FuzzTraceReaders: the trace's skimming readers never panic, and on
// valid JSON they read what a checked jsonscan walk reads.
func FuzzTraceReaders(f *testing.F) {
	f.Add([]byte(`{"max_tokens":1.5,"temperature":0.7,"model":"m"}`))
	f.Add([]byte(`{"data":[{"embedding":[0.1,-2e3]}],"model":"e\"m","max_completion_tokens":3,"max_tokens":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got bodySampling
		got.read(b)
		model := answerModel(b)
		v := jsonscan.New(b)
		if v.Skip(); v.End() != nil {
			return
		}
		var want bodySampling
		wantModel, seenModel := "", false
		s := jsonscan.New(b)
		s.Object(func(k []byte) bool {
			var bit uint8
			switch string(k) {
			case "model":
				if !seenModel && s.Peek() == jsonscan.String {
					wantModel = s.Str()
				}
				seenModel = true
				return true
			case "max_tokens":
				bit = hasMaxTokens
			case "max_completion_tokens":
				bit = hasMaxCompletion
			case "temperature":
				bit = hasTemperature
			default:
				return true
			}
			if want.seen&bit != 0 {
				return true
			}
			want.seen |= bit
			if s.Peek() == jsonscan.Number {
				want.has |= bit
				switch raw := s.Raw(); bit {
				case hasMaxTokens:
					want.maxTokens = truncInt(raw)
				case hasMaxCompletion:
					want.maxCompletion = truncInt(raw)
				default:
					want.temperature = jsonscan.New(raw).Float()
				}
			}
			return true
		})
		if got.has != want.has || got.maxTokens != want.maxTokens || got.maxCompletion != want.maxCompletion ||
			got.temperature != want.temperature || model != wantModel {
			t.Fatalf("%q: read %+v %q, want %+v %q", b, got, model, want, wantModel)
		}
	})
}
