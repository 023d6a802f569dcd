package anthropic

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/edge/llm"
)

func TestDecodeMessages(t *testing.T) {
	body := `{
	  "model": "m", "max_tokens": 100, "stream": true,
	  "system": [{"type":"text","text":"Be terse."},{"type":"text","text":"Answer in French."}],
	  "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
	  "metadata": {"user_id": "u-1"},
	  "tools": [{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
	  "tool_choice": {"type":"tool","name":"get_weather"},
	  "messages": [
	    {"role":"user","content":[{"type":"text","text":"Look:"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
	    {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city": "Paris"}}]},
	    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"18C"}]},{"type":"text","text":"And tomorrow?"}]}
	  ]
	}`
	req, e := DecodeMessages([]byte(body))
	if e != nil {
		t.Fatal(e)
	}
	c := req.Chat
	if !req.Stream || !req.IncludeUsage || req.Model != "m" || *c.MaxTokens != 100 || *c.TopK != 40 || c.User != "u-1" {
		t.Fatalf("scalars: %+v", c)
	}
	if got := c.StopList(); len(got) != 1 || got[0] != "END" {
		t.Fatalf("stop = %v", got)
	}
	if mode, name := c.ToolChoiceMode(); mode != llm.ToolChoiceFunction || name != "get_weather" {
		t.Fatalf("tool choice = %s %s", mode, name)
	}
	if len(c.Tools) != 1 || c.Tools[0].Function.Name != "get_weather" || !strings.Contains(string(c.Tools[0].Function.Parameters), "city") {
		t.Fatalf("tools = %+v", c.Tools)
	}
	var roles []string
	for _, m := range c.Messages {
		roles = append(roles, m.Role)
	}
	if strings.Join(roles, ",") != "system,user,assistant,tool,user" {
		t.Fatalf("roles = %v", roles)
	}
	if s, _ := c.Messages[0].Text(); s != "Be terse.\n\nAnswer in French." {
		t.Fatalf("system = %q", s)
	}
	parts, _ := c.Messages[1].Parts()
	if len(parts) != 2 || parts[1].ImageURL == nil || parts[1].ImageURL.URL != "data:image/png;base64,iVBORw0KGgo=" {
		t.Fatalf("user parts = %+v", parts)
	}
	a := c.Messages[2]
	if s, _ := a.Text(); s != "Checking." || len(a.ToolCalls) != 1 || a.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` {
		t.Fatalf("assistant = %+v", a)
	}
	if tr := c.Messages[3]; tr.ToolCallID != "toolu_1" || string(tr.Content) != `"18C"` {
		t.Fatalf("tool result = %+v", tr)
	}
}

func TestDecodeMessagesErrors(t *testing.T) {
	msgs := func(s string) string { return `{"model":"m","max_tokens":10,"messages":` + s + `}` }
	tests := []struct {
		name, body, param string
	}{
		{"not json", `{"model":`, ""},
		{"no model", `{"max_tokens":10,"messages":[{"role":"user","content":"x"}]}`, "model"},
		{"no max_tokens", `{"model":"m","messages":[{"role":"user","content":"x"}]}`, "max_tokens"},
		{"zero max_tokens", `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, "max_tokens"},
		{"no messages", `{"model":"m","max_tokens":10}`, "messages"},
		{"empty messages", msgs(`[]`), "messages"},
		{"bad role", msgs(`[{"role":"system","content":"x"}]`), "messages.0.role"},
		{"unknown block", msgs(`[{"role":"user","content":[{"type":"text","text":"a"},{"type":"hologram"}]}]`), "messages.0.content.1.type"},
		{"orphan tool_result", msgs(`[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"1"}]}]`), "messages.0.content.0.tool_use_id"},
		{"tool_use from user", msgs(`[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]`), "messages.0.content.0.type"},
		{"bad image source", msgs(`[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]`), "messages.0.content.0.source.type"},
		{"bad tool_choice", `{"model":"m","max_tokens":10,"tool_choice":{"type":"maybe"},"messages":[{"role":"user","content":"x"}]}`, "tool_choice.type"},
		{"stream type", `{"model":"m","max_tokens":10,"stream":"yes","messages":[{"role":"user","content":"x"}]}`, "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := DecodeMessages([]byte(tt.body))
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Status != http.StatusBadRequest || e.Param != tt.param || !strings.Contains(e.Message, tt.param) {
				t.Fatalf("got %d param=%q %q, want param %q", e.Status, e.Param, e.Message, tt.param)
			}
			b := appendErrorBody(nil, e, "req_1")
			var out struct {
				Type  string `json:"type"`
				Error struct{ Type, Message string }
			}
			if json.Unmarshal(b, &out) != nil || out.Type != "error" || out.Error.Type != "invalid_request_error" {
				t.Fatalf("error body %s", b)
			}
		})
	}
}

func TestErrorStatuses(t *testing.T) {
	for _, tt := range []struct {
		in     llm.Error
		typ    string
		status int
	}{
		{llm.Error{Status: 503, Type: llm.TypeOverloaded}, "overloaded_error", 529},
		{llm.Error{Status: 429, Type: llm.TypeRateLimit}, "rate_limit_error", 429},
		{llm.Error{Status: 502, Type: llm.TypeUpstream}, "api_error", 502},
		{llm.Error{Status: 404, Type: llm.TypeInvalidRequest}, "not_found_error", 404},
		{llm.Error{Status: 413, Type: llm.TypeInvalidRequest}, "request_too_large", 413},
		{llm.Error{Status: 401, Type: llm.TypeAuthentication}, "authentication_error", 401},
		{llm.Error{Status: 500, Type: "mystery"}, "api_error", 500},
	} {
		typ, status := anthropicError(&tt.in)
		if typ != tt.typ || status != tt.status {
			t.Errorf("%+v: got %s %d, want %s %d", tt.in, typ, status, tt.typ, tt.status)
		}
	}
}

// events splits translated output into "name:data" strings.
func events(b []byte) []string {
	var out []string
	for _, ev := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
		name, data, _ := strings.Cut(ev, "\ndata: ")
		out = append(out, strings.TrimPrefix(name, "event: ")+":"+data)
	}
	return out
}

func TestTranslatorSequence(t *testing.T) {
	tr := newTranslator("m", "msg_1")
	var b []byte
	raw := []string{
		`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":" there"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`,
	}
	var c llm.Chunk
	var buf []byte // one buffer for every chunk, as a stream's reader reuses its own
	for _, r := range raw {
		buf = append(buf[:0], r...)
		c.SetRaw(buf)
		if err := c.Parse(); err != nil {
			t.Fatal(err)
		}
		b = tr.chunk(b, &c)
	}
	b = tr.finish(b)
	got := events(b)
	var names []string
	for _, e := range got {
		name, data, _ := strings.Cut(e, ":")
		names = append(names, name)
		var v map[string]any
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatalf("event %s has bad JSON %s: %v", name, data, err)
		}
		if v["type"] != name {
			t.Fatalf("event %s carries type %v", name, v["type"])
		}
	}
	want := "message_start,content_block_start,ping,content_block_delta,content_block_delta,content_block_stop," +
		"content_block_start,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop"
	if strings.Join(names, ",") != want {
		t.Fatalf("events\n got %s\nwant %s", strings.Join(names, ","), want)
	}
	all := string(b)
	for _, s := range []string{`"stop_reason":"tool_use"`, `"output_tokens":3`, `"input_tokens":7`, `"partial_json":"{\"a\":"`, `"index":1,"content_block":{"type":"tool_use","id":"call_1","name":"f"`} {
		if !strings.Contains(all, s) {
			t.Errorf("output lacks %s", s)
		}
	}
}

func TestAppendMessage(t *testing.T) {
	text := "Hello"
	cc := &llm.ChatCompletion{ID: "chatcmpl-9", Choices: []llm.Choice{{Message: llm.AnswerMessage{Content: &text,
		ToolCalls: []llm.ToolCall{{ID: "call_1", Function: llm.FunctionCall{Name: "f", Arguments: `{"x":1}`}}}}, FinishReason: "tool_calls"}},
		Usage: &llm.Usage{PromptTokens: 4, CompletionTokens: 2}}
	b := appendMessage(nil, cc, "m")
	var out struct {
		ID, Type, Role, Model, StopReason string
		Content                           []map[string]any
		Usage                             struct{ InputTokens, OutputTokens int }
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if out.ID != "msg_9" || len(out.Content) != 2 || out.Content[1]["type"] != "tool_use" || fmt.Sprint(out.Content[1]["input"]) != "map[x:1]" {
		t.Fatalf("message %s", b)
	}
	if !strings.Contains(string(b), `"stop_reason":"tool_use"`) || !strings.Contains(string(b), `"input_tokens":4`) {
		t.Fatalf("message %s", b)
	}
}

// FuzzDecodeMessages checks that no body panics the decoder and that
// everything it accepts is UTF-8 and a routable canonical chat.
func FuzzDecodeMessages(f *testing.F) {
	f.Add([]byte(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"f","input":{"x":[1]}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","content":"ok","is_error":true}]}]}`))
	f.Add([]byte(`{"model":"m","max_tokens":5,"tools":[{"name":"f"}],"tool_choice":{"type":"any"},"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}`))
	for _, b := range invalidUTF8 {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := DecodeMessages(body)
		if e == nil && !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Message == "" {
				t.Fatalf("bad error %+v", e)
			}
			return
		}
		if req.Model == "" || req.Chat == nil || len(req.Chat.Messages) == 0 || req.Chat.MaxTokens == nil {
			t.Fatalf("accepted an unroutable request: %+v", req)
		}
		if _, err := json.Marshal(req.Chat); err != nil {
			t.Fatalf("canonical request does not encode: %v", err)
		}
	})
}

// FuzzTranslator checks that any OpenAI chunk stream translates to
// well-formed Anthropic events.
func FuzzTranslator(f *testing.F) {
	f.Add([]byte(`{"choices":[{"index":0,"delta":{"role":"assistant","content":"a\"b"}}]}`), []byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]},"finish_reason":"tool_calls"}]}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		tr := newTranslator("m", "msg")
		var out []byte
		var c llm.Chunk
		for _, raw := range [][]byte{a, b} {
			c.SetRaw(raw)
			if c.Parse() != nil {
				continue
			}
			out = tr.chunk(out, &c)
		}
		out = tr.finish(out)
		for _, ev := range events(out) {
			_, data, _ := strings.Cut(ev, ":")
			if !json.Valid([]byte(data)) {
				t.Fatalf("invalid event JSON %q", data)
			}
		}
	})
}

func request4K() []byte {
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet","max_tokens":1024,"stream":true,"system":"You are a helpful assistant that answers questions about the weather and travel plans. Keep answers short and precise.",`)
	b.WriteString(`"tools":[{"name":"get_weather","description":"Get the current weather for a city","input_schema":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}},{"name":"book_hotel","description":"Book a hotel","input_schema":{"type":"object","properties":{"city":{"type":"string"},"nights":{"type":"integer"}}}}],"messages":[`)
	for i := 0; i < 10; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"role":"user","content":"Question %d: what will the weather be like in Paris, Lisbon and Oslo next week, and which city is best for a short walking holiday with museums and good food? Please compare them."},`, i)
		fmt.Fprintf(&b, `{"role":"assistant","content":[{"type":"text","text":"Answer %d: Lisbon is warmest; Paris has the most museums; Oslo is cool and quiet."}]}`, i)
	}
	b.WriteString(`,{"role":"user","content":"Thanks!"}]}`)
	return []byte(b.String())
}

// BenchmarkTranslateRequest: translating a ~4 KB Anthropic request into the
// canonical one, against the baseline of decoding it with encoding/json
// into generic values.
func BenchmarkTranslateRequest(b *testing.B) {
	body := request4K()
	b.Run("translate", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, e := DecodeMessages(body); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("baseline-json-any", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTranslateChunk: one OpenAI-format text chunk, parsed and
// written as an Anthropic content_block_delta event.
func BenchmarkTranslateChunk(b *testing.B) {
	raw := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}`)
	tr := newTranslator("m", "msg")
	var c llm.Chunk
	c.SetRaw(raw)
	c.Parse()
	buf := tr.chunk(nil, &c)
	b.ResetTimer()
	for b.Loop() {
		c.SetRaw(raw)
		if err := c.Parse(); err != nil {
			b.Fatal(err)
		}
		buf = tr.chunk(buf[:0], &c)
	}
}
