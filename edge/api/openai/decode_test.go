package openai

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/edge/llm"
)

func TestDecodeChatErrors(t *testing.T) {
	tests := []struct {
		name, body, param string
	}{
		{"syntax", `{"model":`, ""},
		{"trailing garbage", `{"model":"m","messages":[{"role":"user","content":"x"}]} x`, ""},
		{"not an object", `[1,2]`, ""},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, "model"},
		{"model wrong type", `{"model":7,"messages":[]}`, "model"},
		{"missing messages", `{"model":"m"}`, "messages"},
		{"empty messages", `{"model":"m","messages":[]}`, "messages"},
		{"messages wrong type", `{"model":"m","messages":"hi"}`, "messages"},
		{"missing role", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{"bad role", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"wizard","content":"x"}]}`, "messages[1].role"},
		{"tool without id", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].tool_call_id"},
		{"content number", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"n zero", `{"model":"m","n":0,"messages":[{"role":"user","content":"x"}]}`, "n"},
		{"stream wrong type", `{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}`, "stream"},
		{"stream_options without stream", `{"model":"m","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`, "stream_options"},
		{"tool without type", `{"model":"m","tools":[{}],"messages":[{"role":"user","content":"x"}]}`, "tools[0].type"},
		{"long model", `{"model":"` + strings.Repeat("m", 300) + `","messages":[{"role":"user","content":"x"}]}`, "model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := DecodeChat([]byte(tt.body))
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Status != http.StatusBadRequest || e.Param != tt.param || e.Message == "" {
				t.Fatalf("got %d param=%q msg=%q, want 400 param=%q", e.Status, e.Param, e.Message, tt.param)
			}
		})
	}
}

func TestDecodeChatKeepsBody(t *testing.T) {
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"x_vendor_field":{"a":1}}`
	req, e := DecodeChat([]byte(body))
	if e != nil {
		t.Fatal(e)
	}
	if string(req.Body) != body || !req.Stream || !req.IncludeUsage || req.Model != "m" {
		t.Fatalf("req = %+v", req)
	}
	c, err := req.ChatRequest()
	if err != nil || len(c.Messages) != 1 || c.StreamOptions == nil || !c.StreamOptions.IncludeUsage {
		t.Fatalf("typed chat = %+v, %v", c, err)
	}
}

func TestDecodeOthers(t *testing.T) {
	if _, e := DecodeCompletion([]byte(`{"model":"m"}`)); e == nil || e.Param != "prompt" {
		t.Fatalf("completion without prompt: %v", e)
	}
	if r, e := DecodeCompletion([]byte(`{"model":"m","prompt":"x","stream":true}`)); e != nil || !r.Stream {
		t.Fatalf("completion: %v", e)
	}
	if _, e := DecodeEmbedding([]byte(`{"model":"m"}`)); e == nil || e.Param != "input" {
		t.Fatalf("embedding without input: %v", e)
	}
	if _, e := DecodeEmbedding([]byte(`{"model":"m","input":[]}`)); e == nil || e.Param != "input" {
		t.Fatalf("embedding with empty input: %v", e)
	}
	if _, e := DecodeEmbedding([]byte(`{"model":"m","input":["a","b"]}`)); e != nil {
		t.Fatal(e)
	}
}

// FuzzDecodeChat checks that no body makes the decoder panic, and that
// whatever it accepts is a request the gateway can route: UTF-8, a
// model, at least one message with a known role, and the body kept byte
// for byte.
func FuzzDecodeChat(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"include_usage":true},"n":2,"messages":[{"role":"tool","tool_call_id":"c","content":null}]}`))
	f.Add([]byte(`{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`))
	f.Add([]byte(`{"model":1}`))
	f.Add([]byte(`[]`))
	for _, b := range invalidUTF8 {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte) (*llm.Request, *llm.Error){DecodeChat, DecodeCompletion, DecodeEmbedding} {
			req, e := decode(body)
			if e == nil && !utf8.Valid(body) {
				t.Fatalf("accepted a body that is not UTF-8: %q", body)
			}
			if e != nil {
				if e.Status != http.StatusBadRequest || e.Message == "" {
					t.Fatalf("error without status or message: %+v", e)
				}
				if _, err := json.Marshal(errorBody(e)); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if req.Model == "" || string(req.Body) != string(body) {
				t.Fatalf("accepted a request with no model or a changed body: %+v", req)
			}
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			if req.Op == llm.OpChat {
				var c struct {
					Messages []struct {
						Role any `json:"role"`
					} `json:"messages"`
				}
				if err := json.Unmarshal(body, &c); err != nil || len(c.Messages) == 0 {
					t.Fatalf("accepted a chat without messages: %q (%v)", body, err)
				}
				for _, m := range c.Messages {
					if r, _ := m.Role.(string); !validRoles[r] {
						t.Fatalf("accepted role %v", m.Role)
					}
				}
			}
		}
	})
}

// BenchmarkDecodeChat compares the edge's check of a chat body with the
// baseline, a typed encoding/json decode of the same body.
func BenchmarkDecodeChat(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France? Answer in one word, please, and nothing else."}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}}]}`)
	b.Run("edge", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, e := DecodeChat(body); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("baseline-typed-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var c llm.ChatRequest
			if err := json.Unmarshal(body, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// nestedChat is a chat body of about size bytes whose one message's
// content nests arrays as deep as the size allows.
func nestedChat(size int) []byte {
	head := `{"model":"m","messages":[{"role":"user","content":`
	tail := `}]}`
	depth := (size - len(head) - len(tail)) / 2
	b := make([]byte, 0, size)
	b = append(b, head...)
	b = append(b, strings.Repeat("[", depth)...)
	b = append(b, strings.Repeat("]", depth)...)
	return append(b, tail...)
}

// TestDecodeRefusesDeepNesting checks that a body nested deeper than the
// shared limit is refused with a 400 that says why, on every endpoint,
// and that nesting up to the limit, or brackets inside strings, pass.
func TestDecodeRefusesDeepNesting(t *testing.T) {
	deep := nestedChat(4 << 20)
	for name, decode := range map[string]func([]byte) (*llm.Request, *llm.Error){
		"chat": DecodeChat, "completion": DecodeCompletion, "embedding": DecodeEmbedding,
	} {
		_, e := decode(deep)
		if e == nil || e.Status != http.StatusBadRequest || e.Type != llm.TypeInvalidRequest || !strings.Contains(e.Message, "nested deeper than 512") {
			t.Errorf("%s: a 4 MiB deeply nested body got %+v, want a 400 naming the depth limit", name, e)
		}
	}
	// 512 levels in all: the object, messages, the message, and content.
	ok := `{"model":"m","messages":[{"role":"user","content":` + strings.Repeat("[", 509) + strings.Repeat("]", 509) + `}]}`
	if _, e := DecodeChat([]byte(ok)); e != nil {
		t.Errorf("512 levels refused: %v", e)
	}
	if _, e := DecodeChat([]byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("[{", 1000) + `\"]"}]}`)); e != nil {
		t.Errorf("brackets inside a string refused: %v", e)
	}
}

// BenchmarkDecodeDeepNesting measures refusing a 4 MiB body of nested
// arrays: one pass over the bytes, not a recursive parse.
func BenchmarkDecodeDeepNesting(b *testing.B) {
	deep := nestedChat(4 << 20)
	b.SetBytes(int64(len(deep)))
	for b.Loop() {
		if _, e := DecodeChat(deep); e == nil {
			b.Fatal("accepted")
		}
	}
}

// TestDecodeChatParsesOnce: DecodeChat leaves the typed request on the
// canonical one, so nothing after it reads the body again. The body is
// swapped for bytes that are not JSON; a second parse would fail.
func TestDecodeChatParsesOnce(t *testing.T) {
	body := []byte(`{"model":"m","max_tokens":7,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"type":"function","function":{"name":"f"}}]}`)
	req, e := DecodeChat(body)
	if e != nil {
		t.Fatal(e)
	}
	if req.Chat == nil {
		t.Fatal("DecodeChat left the typed request to a second parse")
	}
	want := req.Chat
	req.Body = []byte(`{"not json`)
	c, err := req.ChatRequest()
	if err != nil || c != want {
		t.Fatalf("ChatRequest parsed the body again: %v", err)
	}
	if c.Model != "m" || len(c.Messages) != 2 || c.Messages[1].Role != "user" || *c.MaxTokens != 7 || c.Tools[0].Function.Name != "f" {
		t.Fatalf("typed request = %+v", c)
	}
}

// TestDecodeChatOneRuleSet: the surface's check and the typed decode
// were two parsers with two sets of rules, so a body could pass one and
// fail the other depending on where it was routed. Each case here was
// accepted by the surface and refused (or read differently) by the
// translating path; now one parser decides, the same way on every route.
func TestDecodeChatOneRuleSet(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"x"}]`
	for _, tt := range []struct {
		name, body, param string
	}{
		{"integer written as a float", `{"model":"m","n":2.0,` + msgs + `}`, "n"},
		{"integer in exponent form", `{"model":"m","max_tokens":1e3,` + msgs + `}`, "max_tokens"},
		{"integer past int64", `{"model":"m","seed":99999999999999999999,` + msgs + `}`, "seed"},
		{"string for an integer", `{"model":"m","max_tokens":"5",` + msgs + `}`, "max_tokens"},
		{"string for a number", `{"model":"m","temperature":"hot",` + msgs + `}`, "temperature"},
		{"tool call of the wrong type", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":1}]}]}`, "messages[0].tool_calls[0].id"},
		{"syntax error after a wrong type", `{"model":7,` + msgs + `,}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, e := DecodeChat([]byte(tt.body))
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Status != http.StatusBadRequest || e.Param != tt.param {
				t.Fatalf("got %d param=%q msg=%q, want 400 param=%q", e.Status, e.Param, e.Message, tt.param)
			}
		})
	}
	// A repeated key takes its last value, as in encoding/json, for
	// every field: the tools list is the last one, not both.
	req, e := DecodeChat([]byte(`{"model":"a","tools":[{"type":"function","function":{"name":"f"}}],"model":"b","tools":[{"type":"function","function":{"name":"g"}}],` + msgs + `}`))
	if e != nil {
		t.Fatal(e)
	}
	if req.Model != "b" || len(req.Chat.Tools) != 1 || req.Chat.Tools[0].Function.Name != "g" {
		t.Fatalf("repeated keys: model %q, tools %+v", req.Model, req.Chat.Tools)
	}
}

// TestDecodeCompletionOnePass: the completions and embeddings checks
// read their fields in the same pass and by the same rules as chat.
func TestDecodeCompletionOnePass(t *testing.T) {
	r, e := DecodeCompletion([]byte(`{"model":"m","prompt":["a"],"stream":true,"stream_options":{"include_usage":true},"n":2}`))
	if e != nil || !r.Stream || !r.IncludeUsage || r.Model != "m" {
		t.Fatalf("completion = %+v, %v", r, e)
	}
	for body, param := range map[string]string{
		`{"model":"m","prompt":"a","n":2.0}`:                                                "n",
		`{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":1}}`:     "stream_options.include_usage",
		`{"model":"m","prompt":"a","stream":false,"stream_options":{"include_usage":true}}`: "stream_options",
		`{"model":"m","prompt":5}`:                                                          "prompt",
		`{"model":"m","prompt":"a"} x`:                                                      "",
	} {
		if _, e := DecodeCompletion([]byte(body)); e == nil || e.Param != param {
			t.Errorf("%s: got %+v, want a 400 naming %q", body, e, param)
		}
	}
	if _, e := DecodeEmbedding([]byte(`{"model":"m","input":[ ]}`)); e == nil || e.Param != "input" {
		t.Errorf("embedding with empty input: %v", e)
	}
	if _, e := DecodeEmbedding([]byte(`{"model":"m","input":""}`)); e == nil || e.Param != "input" {
		t.Errorf("embedding with empty string input: %v", e)
	}
}

// TestDecodeChatManyMessages: the decode stops at the message limit
// rather than building a million messages before refusing them.
func TestDecodeChatManyMessages(t *testing.T) {
	body := `{"model":"m","messages":[` + strings.Repeat(`{"role":"user","content":"x"},`, maxMessages) + `{}]}`
	_, e := DecodeChat([]byte(body))
	if e == nil || e.Param != "messages" || !strings.Contains(e.Message, "more than 10000") {
		t.Fatalf("got %+v, want a 400 naming the message limit", e)
	}
	ok := `{"model":"m","messages":[` + strings.Repeat(`{"role":"user","content":"x"},`, maxMessages-1) + `{"role":"user","content":"x"}]}`
	if _, e := DecodeChat([]byte(ok)); e != nil {
		t.Fatalf("the limit itself refused: %v", e)
	}
}

// TestDecodeChatManyToolCalls: the tool calls of all messages together
// are bounded as messages are.
func TestDecodeChatManyToolCalls(t *testing.T) {
	half := `{"role":"assistant","tool_calls":[` + strings.Repeat(`{},`, maxMessages/2) + `{}]}`
	body := `{"model":"m","messages":[` + half + `,` + half + `]}`
	_, e := DecodeChat([]byte(body))
	if e == nil || !strings.Contains(e.Message, "more than 10000 tool calls") || e.Param != "messages[1].tool_calls" {
		t.Fatalf("got %+v, want a 400 naming the tool call limit", e)
	}
}
