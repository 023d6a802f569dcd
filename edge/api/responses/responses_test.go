package responses

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/edge/llm"
)

func TestDecode(t *testing.T) {
	body := `{
	  "model": "m", "stream": true, "instructions": "Be terse.",
	  "max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9,
	  "metadata": {"k": "v"}, "user": "u-1", "store": false, "parallel_tool_calls": true,
	  "reasoning": {"effort": "low"}, "include": ["message.output_text.logprobs"],
	  "tools": [{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}],
	  "tool_choice": {"type":"function","name":"get_weather"},
	  "text": {"format": {"type":"json_schema","name":"w","schema":{"type":"object"},"strict":true}, "verbosity":"low"},
	  "input": [
	    {"role":"user","content":[{"type":"input_text","text":"Look:"},{"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}]},
	    {"type":"reasoning","id":"rs_1","summary":[]},
	    {"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"Checking.","annotations":[]}]},
	    {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}","status":"completed"},
	    {"type":"function_call","call_id":"call_2","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"},
	    {"type":"function_call_output","call_id":"call_1","output":"18C"},
	    {"type":"function_call_output","call_id":"call_2","output":[{"type":"input_text","text":"4"},{"type":"input_text","text":"C"}]},
	    {"role":"user","content":"And tomorrow?"}
	  ]
	}`
	req, e := Decode([]byte(body))
	if e != nil {
		t.Fatal(e)
	}
	c := req.Chat
	if !req.Stream || !req.IncludeUsage || req.Model != "m" || *c.MaxCompletionTokens != 64 || *c.Temperature != 0.5 || *c.TopP != 0.9 || c.User != "u-1" {
		t.Fatalf("scalars: %+v", c)
	}
	if req.NativeFormat != llm.FormatResponses || string(req.Native) != body {
		t.Fatalf("native = %s %q", req.NativeFormat, req.Native)
	}
	if mode, name := c.ToolChoiceMode(); mode != llm.ToolChoiceFunction || name != "get_weather" {
		t.Fatalf("tool choice = %s %s", mode, name)
	}
	if len(c.Tools) != 1 || c.Tools[0].Function.Name != "get_weather" || !*c.Tools[0].Function.Strict || !strings.Contains(string(c.Tools[0].Function.Parameters), "city") {
		t.Fatalf("tools = %+v", c.Tools)
	}
	var rf map[string]any
	if err := json.Unmarshal(c.ResponseFormat, &rf); err != nil || rf["type"] != "json_schema" || rf["json_schema"].(map[string]any)["name"] != "w" || rf["json_schema"].(map[string]any)["strict"] != true {
		t.Fatalf("response_format = %s (%v)", c.ResponseFormat, err)
	}
	var roles []string
	for _, m := range c.Messages {
		roles = append(roles, m.Role)
	}
	if strings.Join(roles, ",") != "system,user,assistant,tool,tool,user" {
		t.Fatalf("roles = %v", roles)
	}
	if s, _ := c.Messages[0].Text(); s != "Be terse." {
		t.Fatalf("system = %q", s)
	}
	parts, err := c.Messages[1].Parts()
	if err != nil || len(parts) != 2 || parts[0].Text != "Look:" || parts[1].ImageURL == nil || parts[1].ImageURL.URL != "data:image/png;base64,iVBORw0KGgo=" || parts[1].ImageURL.Detail != "low" {
		t.Fatalf("user parts = %+v (%v)", parts, err)
	}
	a := c.Messages[2]
	if s, _ := a.Text(); s != "Checking." || len(a.ToolCalls) != 2 || a.ToolCalls[0].ID != "call_1" || a.ToolCalls[1].Function.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("assistant = %+v", a)
	}
	if tr := c.Messages[3]; tr.ToolCallID != "call_1" || string(tr.Content) != `"18C"` {
		t.Fatalf("tool result = %+v", tr)
	}
	if tr := c.Messages[4]; tr.ToolCallID != "call_2" || string(tr.Content) != `"4C"` {
		t.Fatalf("tool result = %+v", tr)
	}
	// The canonical request encodes as a chat request an OpenAI
	// upstream accepts.
	if _, err := json.Marshal(c); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeString(t *testing.T) {
	req, e := Decode([]byte(`{"model":"m","input":"hello"}`))
	if e != nil {
		t.Fatal(e)
	}
	if len(req.Chat.Messages) != 1 || req.Chat.Messages[0].Role != "user" || string(req.Chat.Messages[0].Content) != `"hello"` || req.Stream {
		t.Fatalf("messages = %+v", req.Chat.Messages)
	}
}

func TestDecodeErrors(t *testing.T) {
	in := func(s string) string { return `{"model":"m","input":` + s + `}` }
	tests := []struct {
		name, body, param string
	}{
		{"not json", `{"model":`, ""},
		{"not an object", `[1]`, ""},
		{"not utf-8", "{\"model\":\"m\",\"input\":\"\xff\"}", ""},
		{"no model", `{"input":"x"}`, "model"},
		{"no input", `{"model":"m"}`, "input"},
		{"empty input", in(`[]`), "input"},
		{"input a number", in(`3`), "input"},
		{"bad role", in(`[{"role":"robot","content":"x"}]`), "input[0].role"},
		{"no content", in(`[{"role":"user"}]`), "input[0].content"},
		{"unknown part", in(`[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_hologram"}]}]`), "input[0].content[1].type"},
		{"image by file", in(`[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]`), "input[0].content[0].file_id"},
		{"unknown item", in(`[{"type":"web_search_call","id":"ws_1"}]`), "input[0].type"},
		{"orphan output", in(`[{"type":"function_call_output","call_id":"call_9","output":"x"}]`), "input[0].call_id"},
		{"call without name", in(`[{"type":"function_call","call_id":"c","arguments":"{}"}]`), "input[0].name"},
		{"item reference", in(`[{"type":"item_reference","id":"msg_1"}]`), "input[0].type"},
		{"store", `{"model":"m","input":"x","store":true}`, "store"},
		{"previous response", `{"model":"m","input":"x","previous_response_id":"resp_1"}`, "previous_response_id"},
		{"conversation", `{"model":"m","input":"x","conversation":"conv_1"}`, "conversation"},
		{"background", `{"model":"m","input":"x","background":true}`, "background"},
		{"hosted tool", `{"model":"m","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{"tool without name", `{"model":"m","input":"x","tools":[{"type":"function"}]}`, "tools[0].name"},
		{"bad tool_choice", `{"model":"m","input":"x","tool_choice":"sometimes"}`, "tool_choice"},
		{"schema without name", `{"model":"m","input":"x","text":{"format":{"type":"json_schema","schema":{}}}}`, "text.format.name"},
		{"bad format", `{"model":"m","input":"x","text":{"format":{"type":"yaml"}}}`, "text.format.type"},
		{"zero max_output_tokens", `{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens"},
		{"temperature a string", `{"model":"m","input":"x","temperature":"hot"}`, "temperature"},
		{"stream a string", `{"model":"m","input":"x","stream":"yes"}`, "stream"},
		{"metadata not strings", `{"model":"m","input":"x","metadata":{"k":1}}`, "metadata.k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := Decode([]byte(tt.body))
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Status != http.StatusBadRequest || e.Param != tt.param || e.Message == "" {
				t.Fatalf("error = %+v, want 400 naming %q", e, tt.param)
			}
		})
	}
	// The stateful fields' refusal says why.
	_, e := Decode([]byte(`{"model":"m","input":"x","store":true}`))
	if !strings.Contains(e.Message, "does not store responses") {
		t.Fatalf("message = %q", e.Message)
	}
}

func ptr[T any](v T) *T { return &v }

func TestEncode(t *testing.T) {
	req, e := Decode([]byte(`{"model":"m","input":"hi","instructions":"Be terse.","metadata":{"a":"b"},"max_output_tokens":50}`))
	if e != nil {
		t.Fatal(e)
	}
	req.ID = "r1"
	cc := &llm.ChatCompletion{ID: "chatcmpl-1", Created: 1700000000, Model: "up", Choices: []llm.Choice{{
		Message: llm.AnswerMessage{Role: "assistant", Content: ptr("Sunny."), ToolCalls: []llm.ToolCall{
			{ID: "call_1", Type: "function", Function: llm.FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}},
		FinishReason: "tool_calls"}}, Usage: &llm.Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}}
	out, u, err := format{}.Encode(req, &llm.Response{Completion: cc})
	if err != nil {
		t.Fatal(err)
	}
	if u.PromptTokens != 7 || u.CompletionTokens != 3 {
		t.Fatalf("usage = %+v", u)
	}
	var r struct {
		ID, Object, Status, Model, Instructions string
		CreatedAt                               int64 `json:"created_at"`
		MaxOutputTokens                         int   `json:"max_output_tokens"`
		Store                                   bool
		Metadata                                map[string]string
		Output                                  []struct {
			Type, ID, Status, Role, CallID, Name, Arguments string
			CallIDJSON                                      string `json:"call_id"`
			Content                                         []struct{ Type, Text string }
		}
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
			TotalTokens  int `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.ID != "resp_r1" || r.Object != "response" || r.Status != "completed" || r.Model != "m" || r.CreatedAt != 1700000000 || r.Instructions != "Be terse." || r.MaxOutputTokens != 50 || r.Store || r.Metadata["a"] != "b" {
		t.Fatalf("response = %s", out)
	}
	if len(r.Output) != 2 || r.Output[0].Type != "message" || r.Output[0].Content[0].Type != "output_text" || r.Output[0].Content[0].Text != "Sunny." ||
		r.Output[1].Type != "function_call" || r.Output[1].CallIDJSON != "call_1" || r.Output[1].Name != "get_weather" || r.Output[1].Arguments != `{"city":"Paris"}` {
		t.Fatalf("output = %s", out)
	}
	if r.Usage.InputTokens != 7 || r.Usage.OutputTokens != 3 || r.Usage.TotalTokens != 10 {
		t.Fatalf("usage = %s", out)
	}

	// A length stop is an incomplete response.
	cc.Choices[0].FinishReason, cc.Choices[0].Message.ToolCalls = "length", nil
	out, _, _ = format{}.Encode(req, &llm.Response{Completion: cc})
	if !strings.Contains(string(out), `"status":"incomplete"`) || !strings.Contains(string(out), `"incomplete_details":{"reason":"max_output_tokens"}`) {
		t.Fatalf("length: %s", out)
	}
	// An upstream's own response object passes as it came.
	native := []byte(`{"id":"resp_up","object":"response"}`)
	if out, _, _ := (format{}).Encode(req, &llm.Response{Body: native, Format: llm.FormatResponses}); string(out) != string(native) {
		t.Fatalf("native = %s", out)
	}
}

// sseEvents splits an event stream into (name, data) pairs.
func sseEvents(t *testing.T, b []byte) (names []string, datas []map[string]any) {
	t.Helper()
	for _, ev := range strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n") {
		name, data, ok := strings.Cut(ev, "\ndata: ")
		if !ok || !strings.HasPrefix(name, "event: ") {
			t.Fatalf("not an event: %q", ev)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(data), &d); err != nil {
			t.Fatalf("event %s: %v: %s", name, err, data)
		}
		name = strings.TrimPrefix(name, "event: ")
		if d["type"] != name {
			t.Fatalf("event %s has type %v", name, d["type"])
		}
		names = append(names, name)
		datas = append(datas, d)
	}
	return names, datas
}

func textChunk(s string) *llm.Chunk {
	return &llm.Chunk{ID: "c", Choices: []llm.ChunkChoice{{Content: s, HasContent: true}}}
}

func TestStream(t *testing.T) {
	req, _ := Decode([]byte(`{"model":"m","input":"hi","stream":true}`))
	req.ID = "r2"
	st := newStreamer(req)
	var b []byte
	for _, c := range []*llm.Chunk{
		{Choices: []llm.ChunkChoice{{Role: "assistant", HasContent: true}}},
		textChunk("Hel"), textChunk("lo"),
		{Choices: []llm.ChunkChoice{{ToolCalls: []llm.ToolCallDelta{{Index: 0, ID: "call_1", Name: "get_weather"}}}}},
		{Choices: []llm.ChunkChoice{{ToolCalls: []llm.ToolCallDelta{{Index: 0, Arguments: `{"city":`}}}}},
		{Choices: []llm.ChunkChoice{{ToolCalls: []llm.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}}}}},
		{Choices: []llm.ChunkChoice{{FinishReason: "tool_calls"}}},
		{Usage: &llm.Usage{PromptTokens: 5, CompletionTokens: 4, TotalTokens: 9}},
	} {
		var err error
		if b, err = st.Chunk(b, c); err != nil {
			t.Fatal(err)
		}
	}
	b = st.End(b, llm.Usage{}, false)
	names, datas := sseEvents(t, b)
	want := "response.created response.in_progress " +
		"response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta " +
		"response.output_text.done response.content_part.done response.output_item.done " +
		"response.output_item.added response.function_call_arguments.delta response.function_call_arguments.delta " +
		"response.function_call_arguments.done response.output_item.done response.completed"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("events:\n%s\nwant:\n%s", got, want)
	}
	for i, d := range datas {
		if d["sequence_number"] != float64(i) {
			t.Fatalf("event %d has sequence_number %v", i, d["sequence_number"])
		}
	}
	if d := datas[6]; d["text"] != "Hello" || d["output_index"] != float64(0) {
		t.Fatalf("text done = %v", d)
	}
	if d := datas[12]; d["arguments"] != `{"city":"Paris"}` || d["output_index"] != float64(1) {
		t.Fatalf("arguments done = %v", d)
	}
	resp := datas[len(datas)-1]["response"].(map[string]any)
	out := resp["output"].([]any)
	usage := resp["usage"].(map[string]any)
	if resp["status"] != "completed" || len(out) != 2 || usage["input_tokens"] != float64(5) || usage["output_tokens"] != float64(4) {
		t.Fatalf("completed = %v", resp)
	}
	if c := out[1].(map[string]any); c["call_id"] != "call_1" || c["arguments"] != `{"city":"Paris"}` || c["status"] != "completed" {
		t.Fatalf("call item = %v", c)
	}
	if u, ok := st.Usage(); !ok || u.PromptTokens != 5 {
		t.Fatalf("usage = %+v %v", u, ok)
	}
}

func TestStreamError(t *testing.T) {
	req, _ := Decode([]byte(`{"model":"m","input":"hi","stream":true}`))
	st := newStreamer(req)
	b, _ := st.Chunk(nil, textChunk("Hel"))
	b = st.Error(b, &llm.Error{Status: 502, Type: llm.TypeUpstream, Code: "stream_interrupted", Message: "cut"})
	names, datas := sseEvents(t, b)
	if n := len(names); names[n-2] != "response.failed" || names[n-1] != "error" {
		t.Fatalf("events = %v", names)
	}
	for _, n := range names {
		if n == "response.completed" {
			t.Fatal("a broken stream completed")
		}
	}
	failed := datas[len(datas)-2]["response"].(map[string]any)
	if failed["status"] != "failed" || failed["error"].(map[string]any)["code"] != "stream_interrupted" {
		t.Fatalf("failed = %v", failed)
	}
	ev := datas[len(datas)-1]
	if ev["code"] != "stream_interrupted" || ev["message"] != "cut" || ev["error"].(map[string]any)["code"] != "stream_interrupted" {
		t.Fatalf("error event = %v", ev)
	}
}

func TestStreamPassthrough(t *testing.T) {
	req, _ := Decode([]byte(`{"model":"m","input":"hi","stream":true}`))
	st := newStreamer(req)
	c := &llm.Chunk{Event: "response.output_text.delta", Raw: []byte(`{"type":"response.output_text.delta","sequence_number":3,"delta":"x"}`)}
	b, _ := st.Chunk(nil, c)
	if want := "event: response.output_text.delta\ndata: " + string(c.Raw) + "\n\n"; string(b) != want {
		t.Fatalf("relayed %q", b)
	}
	if end := st.End(nil, llm.Usage{}, false); len(end) != 0 {
		t.Fatalf("a passed-through stream got an end of Meridian's: %s", end)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"model":"m","input":"hi"}`))
	f.Add([]byte(`{"model":"m","instructions":"x","input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"o"}],"tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"f"},"text":{"format":{"type":"json_schema","name":"n","schema":{}}}}`))
	f.Add([]byte(`{"model":"m","input":[{"role":"assistant","content":[{"type":"output_text","text":"a"}]}],"store":false}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := Decode(body)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Message == "" || !utf8.ValidString(e.Message) {
				t.Fatalf("bad error %+v", e)
			}
			return
		}
		if req.Model == "" || len(req.Chat.Messages) == 0 {
			t.Fatalf("accepted a request without model or messages: %q", body)
		}
		// Whatever is accepted encodes as a chat request.
		if _, err := json.Marshal(req.Chat); err != nil {
			t.Fatalf("canonical request does not encode: %v", err)
		}
		// And its answer renders as valid JSON.
		out, _, err := format{}.Encode(req, &llm.Response{Completion: &llm.ChatCompletion{Choices: []llm.Choice{{Message: llm.AnswerMessage{Content: ptr("x")}}}}})
		if err != nil || !json.Valid(out) {
			t.Fatalf("answer does not render: %v %s", err, out)
		}
	})
}

// TestDecodeDeepNesting: a body nested far past jsonscan's limit is a
// 400, read only as far as the limit, never a stack overflow.
func TestDecodeDeepNesting(t *testing.T) {
	for _, at := range []string{`{"model":"m","input":[{"role":"user","content":%s}]}`, `{"model":"m","input":"x","metadata":{"k":%s}}`, `{"model":"m","input":"x","reasoning":%s}`} {
		depth := 1 << 20
		body := strings.Replace(at, "%s", strings.Repeat("[", depth)+strings.Repeat("]", depth), 1)
		_, e := Decode([]byte(body))
		if e == nil || e.Status != http.StatusBadRequest {
			t.Fatalf("%.40s…: %+v", body, e)
		}
	}
}
