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
