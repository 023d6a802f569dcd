package llm

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFinishTable(t *testing.T) {
	for _, tt := range []struct {
		f               Format
		native, canonic string
	}{
		{FormatAnthropic, "end_turn", FinishStop},
		{FormatAnthropic, "stop_sequence", FinishStop},
		{FormatAnthropic, "max_tokens", FinishLength},
		{FormatAnthropic, "tool_use", FinishToolCalls},
		{FormatAnthropic, "refusal", FinishContentFilter},
		{FormatGemini, "STOP", FinishStop},
		{FormatGemini, "MAX_TOKENS", FinishLength},
		{FormatGemini, "SAFETY", FinishContentFilter},
		{FormatOllama, "length", FinishLength},
		{FormatAnthropic, "something_new", FinishStop},
	} {
		if got := FinishFrom(tt.f, tt.native); got != tt.canonic {
			t.Errorf("FinishFrom(%s, %s) = %s, want %s", tt.f, tt.native, got, tt.canonic)
		}
	}
	for _, tt := range []struct {
		f               Format
		canonic, native string
	}{
		{FormatAnthropic, FinishStop, "end_turn"},
		{FormatAnthropic, FinishToolCalls, "tool_use"},
		{FormatAnthropic, FinishLength, "max_tokens"},
		{FormatGemini, FinishToolCalls, "STOP"},
		{FormatOpenAI, FinishContentFilter, "content_filter"},
	} {
		if got := FinishTo(tt.f, tt.canonic); got != tt.native {
			t.Errorf("FinishTo(%s, %s) = %s, want %s", tt.f, tt.canonic, got, tt.native)
		}
	}
	if RoleTo(FormatGemini, RoleAssistant) != "model" || RoleFrom(FormatGemini, "model") != RoleAssistant || RoleTo(FormatAnthropic, RoleSystem) != "" {
		t.Error("role table")
	}
}

func TestToolChoiceAndStop(t *testing.T) {
	c := &ChatRequest{}
	for _, tt := range []struct{ mode, name string }{{"auto", ""}, {"none", ""}, {"required", ""}, {"function", "f"}} {
		c.SetToolChoice(tt.mode, tt.name)
		if m, n := c.ToolChoiceMode(); m != tt.mode || n != tt.name {
			t.Errorf("%s/%s round-tripped to %s/%s", tt.mode, tt.name, m, n)
		}
	}
	c.Stop = json.RawMessage(`"x"`)
	if s := c.StopList(); len(s) != 1 || s[0] != "x" {
		t.Errorf("stop string: %v", s)
	}
	c.Stop = json.RawMessage(`["a","b"]`)
	if s := c.StopList(); len(s) != 2 {
		t.Errorf("stop list: %v", s)
	}
}

func TestMessageParts(t *testing.T) {
	m := Message{Content: json.RawMessage(`[{"type":"text","text":"a"},{"type":"text","text":"b"}]`)}
	if s, ok := m.Text(); !ok || s != "ab" {
		t.Fatalf("text = %q %v", s, ok)
	}
	m.Content = json.RawMessage(`[{"type":"image_url","image_url":{"url":"https://x"}}]`)
	if _, ok := m.Text(); ok {
		t.Fatal("an image counted as text")
	}
	m.Content = json.RawMessage(`7`)
	if _, err := m.Parts(); err == nil {
		t.Fatal("a number was accepted as content")
	}
}

func TestChunkRoundTrip(t *testing.T) {
	c := &Chunk{ID: "c1", Model: "m", Created: 5, Choices: []ChunkChoice{{
		Role: "assistant", Content: "hé \"quoted\"\n", HasContent: true,
		ToolCalls: []ToolCallDelta{{Index: 0, ID: "call_1", Name: "f", Arguments: `{"a":`}},
	}, {Index: 1, FinishReason: "stop"}}, Usage: &Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}}
	raw := c.AppendJSON(nil)
	if !json.Valid(raw) {
		t.Fatalf("invalid JSON %s", raw)
	}
	var back Chunk
	back.SetRaw(raw)
	if err := back.Parse(); err != nil {
		t.Fatal(err)
	}
	got := back.Choices[0]
	if back.ID != "c1" || back.Model != "m" || got.Content != c.Choices[0].Content || got.ToolCalls[0].Arguments != `{"a":` ||
		back.Choices[1].FinishReason != "stop" || back.Usage.TotalTokens != 3 {
		t.Fatalf("round trip: %+v", back)
	}
	if !strings.Contains(string(raw), `"object":"chat.completion.chunk"`) {
		t.Fatalf("not a chunk object: %s", raw)
	}
}

// FuzzAppendJSONString checks the hand-written string encoder against
// encoding/json: both must decode to the same string.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\ \n\t\r", "\x00\x1f", "é ✓ \u2028", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as invalid JSON %s: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var wantS string
		json.Unmarshal(want, &wantS)
		if got != wantS {
			t.Fatalf("%q: got %q, encoding/json gives %q", s, got, wantS)
		}
	})
}

// FuzzChunkParse checks that no upstream chunk makes Parse panic and that
// what it parses re-encodes as valid JSON.
func FuzzChunkParse(f *testing.F) {
	f.Add([]byte(`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"hi","tool_calls":[{"index":0,"id":"x","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`))
	f.Add([]byte(`{"choices":[{"delta":{"content":null}}]}`))
	f.Add([]byte(`{]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c Chunk
		c.SetRaw(raw)
		if c.Parse() != nil {
			return
		}
		c.Raw = nil
		if out := c.AppendJSON(nil); !json.Valid(out) {
			t.Fatalf("re-encoded %q as invalid JSON %s", raw, out)
		}
	})
}

// BenchmarkChunkParse: one OpenAI text chunk parsed into typed fields,
// against decoding it with encoding/json into a map as a baseline.
func BenchmarkChunkParse(b *testing.B) {
	raw := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}`)
	b.Run("parse", func(b *testing.B) {
		var c Chunk
		for b.Loop() {
			c.SetRaw(raw)
			c.Parse()
		}
	})
	b.Run("baseline-json-map", func(b *testing.B) {
		for b.Loop() {
			var m map[string]any
			json.Unmarshal(raw, &m)
		}
	})
}

// FuzzDecodeChatRequest checks the one-pass decoder against
// encoding/json: whatever encoding/json decodes, DecodeChatRequest must
// decode to the same request.
func FuzzDecodeChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"temperature":0.5,"seed":3,"stop":["x"],"user":"u","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"ok"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"},"strict":true}}],"tool_choice":"auto","response_format":{"type":"json_object"}}`))
	f.Add([]byte(`{"model":"m","messages":[]}`))
	f.Add([]byte(`{"n":2.5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var want ChatRequest
		wantErr := json.Unmarshal(body, &want)
		got, err := DecodeChatRequest(body)
		if wantErr != nil {
			return // the one-pass decoder may accept more, never less
		}
		for _, c := range body {
			if c >= 'A' && c <= 'Z' || c >= 0x80 {
				// encoding/json matches keys case-insensitively (and
				// folds some non-ASCII letters); OpenAI's API does not,
				// nor does the one-pass decoder.
				return
			}
		}
		calls := 0
		for _, m := range want.Messages {
			calls += len(m.ToolCalls)
		}
		if len(want.Messages) > MaxMessages || calls > MaxMessages {
			return // the one-pass decoder stops at the limits
		}
		if err != nil {
			t.Fatalf("encoding/json decodes %q but DecodeChatRequest fails: %v", body, err)
		}
		a, _ := json.Marshal(want)
		b, _ := json.Marshal(got)
		if string(a) != string(b) {
			t.Fatalf("decoders disagree on %q:\nencoding/json: %s\none-pass:      %s", body, a, b)
		}
	})
}

func BenchmarkDecodeChatRequest(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","stream":true,"temperature":0.3,"messages":[{"role":"system","content":"You are a helpful assistant that answers questions about the weather and travel plans."}`)
	for i := 0; i < 10; i++ {
		sb.WriteString(`,{"role":"user","content":"What will the weather be like in Paris, Lisbon and Oslo next week, and which city is best for a short walking holiday with museums?"},{"role":"assistant","content":"Lisbon is warmest; Paris has the most museums; Oslo is cool and quiet."}`)
	}
	sb.WriteString(`],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}`)
	benchDecode(b, []byte(sb.String()))
}

// TestMessagePartsOnePass: Parts reads content the way encoding/json
// reads it into []ContentPart (escapes, nulls, image URLs), and refuses
// a field of the wrong type or bytes that are not JSON.
func TestMessagePartsOnePass(t *testing.T) {
	m := Message{Content: json.RawMessage(`[{"type":"text","text":"a\nb \u00e9"},null,{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"},"extra":[1,{"z":2}]},{"type":"text","text":null}]`)}
	got, err := m.Parts()
	if err != nil {
		t.Fatal(err)
	}
	var want []ContentPart
	if err := json.Unmarshal(m.Content, &want); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("parts = %s, want %s", g, w)
	}
	for _, bad := range []string{`[{"type":1}]`, `[{"image_url":"x"}]`, `[5]`, `[{"type":"text"`, `"x" y`, `{"type":"text"}`} {
		m := Message{Content: json.RawMessage(bad)}
		if p, err := m.Parts(); err == nil {
			t.Errorf("Parts(%s) = %+v, want an error", bad, p)
		}
	}
}

// FuzzMessageParts: Parts never panics, and what it reads survives a
// round trip through PartsContent unchanged.
func FuzzMessageParts(f *testing.F) {
	f.Add([]byte(`[{"type":"text","text":"hi \u00e9\n"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]`))
	f.Add([]byte(`"just text"`))
	f.Add([]byte(`[null,{"type":null}]`))
	f.Fuzz(func(t *testing.T, content []byte) {
		m := Message{Content: content}
		parts, err := m.Parts()
		if err != nil || len(parts) == 0 {
			return
		}
		again, err := (&Message{Content: PartsContent(parts)}).Parts()
		if err != nil {
			t.Fatalf("round trip of %q: %v", content, err)
		}
		a, _ := json.Marshal(parts)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("round trip of %q: %s != %s", content, a, b)
		}
	})
}
