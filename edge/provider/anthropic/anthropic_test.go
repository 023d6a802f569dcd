package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
)

var update = flag.Bool("update", false, "rewrite the canonical-output golden files in testdata")

const testKey = "sk-ant-test-secret"

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGolden compares got with a golden file of canonical output, or
// rewrites the file under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

// sameJSON reports whether a and b hold the same JSON value, ignoring
// layout and key order.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func adapter(t *testing.T, h http.HandlerFunc, edit func(*table.Provider)) *Adapter {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := table.Provider{ID: "claude", Kind: table.KindAnthropic, BaseURL: srv.URL + "/v1/", APIKey: testKey}
	if edit != nil {
		edit(&p)
	}
	a, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func chatRequest(t testing.TB, body string, stream bool) *llm.Request {
	return &llm.Request{ID: "req-1", Op: llm.OpChat, Model: "claude-alias", Stream: stream, Body: []byte(body)}
}

// checkHeaders asserts what Anthropic needs besides the body.
func checkHeaders(t *testing.T, r *http.Request, stream bool) {
	t.Helper()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		t.Errorf("%s %s, want POST /v1/messages", r.Method, r.URL.Path)
	}
	want := map[string]string{"X-Api-Key": testKey, "Anthropic-Version": "2023-06-01", "Content-Type": "application/json", "Accept": "application/json"}
	if stream {
		want["Accept"] = "text/event-stream"
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if r.Header.Get("Authorization") != "" {
		t.Error("the key must go in x-api-key only")
	}
}

func TestGoldenChat(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		checkHeaders(t, r, false)
		got, _ := io.ReadAll(r.Body)
		if want := readFile(t, "messages_request.json"); !sameJSON(t, got, want) {
			t.Errorf("upstream request\n got: %s\nwant: %s", got, want)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(readFile(t, "messages_response.json"))
	}, nil)
	resp, err := a.Do(context.Background(), chatRequest(t, string(readFile(t, "chat_request.json")), false), "claude-sonnet-4-5")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Completion == nil || resp.Body != nil || resp.Stream != nil {
		t.Fatalf("response = %+v, want a typed completion", resp)
	}
	want := llm.Usage{PromptTokens: 410 + 1024, CompletionTokens: 57, TotalTokens: 410 + 1024 + 57}
	if resp.Usage != want || *resp.Completion.Usage != want {
		t.Errorf("usage = %+v / %+v, want %+v", resp.Usage, *resp.Completion.Usage, want)
	}
	if resp.Completion.Created == 0 {
		t.Error("created is not set")
	}
	resp.Completion.Created = 0
	got, err := json.MarshalIndent(resp.Completion, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "completion.golden.json", append(got, '\n'))
}

// transcript renders a stream as one OpenAI chunk per line, with
// created zeroed, and the error that ended it.
func transcript(t *testing.T, s llm.Stream) []byte {
	t.Helper()
	var out []byte
	for range 10000 {
		c, err := s.Next()
		if err == io.EOF {
			return append(out, "EOF\n"...)
		}
		if err != nil {
			return fmt.Appendf(out, "error: %v\n", err)
		}
		if c.Raw != nil {
			t.Fatal("a translating adapter must not set Raw")
		}
		if c.Created == 0 {
			t.Fatal("chunk without created")
		}
		c.Created = 0
		out = append(c.AppendJSON(out), '\n')
	}
	t.Fatal("stream does not end")
	return nil
}

func TestGoldenStream(t *testing.T) {
	tests := []struct {
		name  string
		usage llm.Usage
	}{
		{"stream_text", llm.Usage{PromptTokens: 25, CompletionTokens: 15, TotalTokens: 40}},
		{"stream_tools", llm.Usage{PromptTokens: 472 + 100 + 2000, CompletionTokens: 89, TotalTokens: 472 + 100 + 2000 + 89}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				checkHeaders(t, r, true)
				got, _ := io.ReadAll(r.Body)
				var body struct {
					Stream bool `json:"stream"`
				}
				if json.Unmarshal(got, &body); !body.Stream {
					t.Errorf("stream is not asked for: %s", got)
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.Write(readFile(t, tt.name+".sse"))
			}, nil)
			resp, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`, true), "claude-sonnet-4-5")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Stream.Close()
			checkGolden(t, tt.name+".golden", transcript(t, resp.Stream))
			if u, ok := resp.Stream.Usage(); !ok || u != tt.usage {
				t.Errorf("usage = %+v %v, want %+v", u, ok, tt.usage)
			}
		})
	}
}

// TestStreamSequence checks the canonical chunk sequence on the tool
// stream field by field, independently of the golden transcript.
func TestStreamSequence(t *testing.T) {
	s := newStream("claude", &memCall{}, bytes.NewReader(readFile(t, "stream_tools.sse")), "fallback")
	type call struct{ id, name, args string }
	var (
		calls      []call
		text       string
		finishes   []string
		usageSeen  bool
		first      = true
		ids, model = map[string]bool{}, ""
	)
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if usageSeen {
			t.Fatal("chunk after the usage chunk")
		}
		ids[c.ID] = true
		model = c.Model
		if len(c.Choices) == 0 {
			if c.Usage == nil {
				t.Fatal("chunk with neither choices nor usage")
			}
			usageSeen = true
			continue
		}
		ch := c.Choices[0]
		if first != (ch.Role == "assistant") {
			t.Fatalf("role %q on a chunk, first=%v", ch.Role, first)
		}
		first = false
		text += ch.Content
		if ch.FinishReason != "" {
			finishes = append(finishes, ch.FinishReason)
			if ch.Content != "" || len(ch.ToolCalls) > 0 {
				t.Fatal("finish chunk carries content")
			}
		}
		for _, tc := range ch.ToolCalls {
			switch {
			case tc.Index == len(calls) && tc.ID != "":
				calls = append(calls, call{tc.ID, tc.Name, tc.Arguments})
			case tc.Index < len(calls) && tc.ID == "" && tc.Name == "":
				calls[tc.Index].args += tc.Arguments
			default:
				t.Fatalf("tool call delta %+v after %d calls", tc, len(calls))
			}
		}
	}
	want := []call{
		{"toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", `{"city": "San Francisco", "unit": "c"}`},
		{"toolu_01VfJdS7AwbHLaNnmvJqbLHv", "get_time", `{}`},
	}
	if !reflect.DeepEqual(calls, want) || text != "Okay, let me check." ||
		!reflect.DeepEqual(finishes, []string{llm.FinishToolCalls}) || !usageSeen {
		t.Fatalf("calls %+v text %q finishes %v usage %v", calls, text, finishes, usageSeen)
	}
	if len(ids) != 1 || !ids["chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"] || model != "claude-sonnet-4-5-20250929" {
		t.Fatalf("ids %v model %q", ids, model)
	}
}

func TestStreamWithoutStopReason(t *testing.T) {
	// No message_delta: message_stop still gives a finish chunk, then
	// usage, then EOF.
	sse := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
		// No event name, so it is read from "type"; spaced out, so the
		// delta takes the general path.
		"data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"hi\"}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	m := &memCall{}
	s := newStream("claude", m, strings.NewReader(sse), "c")
	var kinds []string
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.Usage != nil:
			kinds = append(kinds, "usage")
			if s.Buffered() != 0 {
				t.Error("nothing is buffered after the usage chunk")
			}
		case c.Choices[0].FinishReason != "":
			kinds = append(kinds, "finish:"+c.Choices[0].FinishReason)
			if s.Buffered() == 0 {
				t.Error("the usage chunk is in memory: Buffered must say so")
			}
		default:
			kinds = append(kinds, "delta:"+c.Choices[0].Content)
		}
	}
	if want := []string{"delta:", "delta:hi", "finish:stop", "usage"}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("chunks %v, want %v", kinds, want)
	}
	s.Close()
	if !m.drained {
		t.Fatal("a finished stream must drain its connection")
	}
}

func TestStreamCut(t *testing.T) {
	full := string(readFile(t, "stream_tools.sse"))
	tests := []struct {
		name string
		body string
	}{
		{"midway", full[:strings.Index(full, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}")]},
		{"inside an event", full[:strings.Index(full, "ncisco")]},
		{"after the finish", full[:strings.Index(full, "event: message_stop")]},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, tt.body)
			}, nil)
			resp, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true), "")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Stream.Close()
			for {
				_, err := resp.Stream.Next()
				if err == nil {
					continue
				}
				if !errors.Is(err, llm.ErrStreamCut) {
					t.Fatalf("err = %v, want ErrStreamCut", err)
				}
				break
			}
			if _, err := resp.Stream.Next(); !errors.Is(err, llm.ErrStreamCut) {
				t.Fatalf("after the cut: %v", err)
			}
		})
	}
}

func TestStreamErrorEvent(t *testing.T) {
	start := string(readFile(t, "stream_text.sse"))
	start = start[:strings.Index(start, "event: content_block_stop")]
	tests := []struct {
		event      string
		status     int
		typ, msg   string
		retryable  bool
		notContain string
	}{
		{`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`, 503, llm.TypeOverloaded, "is overloaded", true, ""},
		{`{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`, 502, llm.TypeUpstream, "Internal server error", true, ""},
		{`{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}`, 502, llm.TypeUpstream, "prompt is too long", false, ""},
	}
	for _, tt := range tests {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, start+"event: error\ndata: "+tt.event+"\n\n")
		}, nil)
		resp, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true), "")
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for {
			_, err = resp.Stream.Next()
			if err != nil {
				break
			}
			n++
		}
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != tt.status || e.Type != tt.typ || e.Retryable != tt.retryable || !strings.Contains(e.Message, tt.msg) {
			t.Errorf("%s: err = %#v", tt.event, err)
		}
		if n != 4 { // role, three text deltas
			t.Errorf("%d chunks before the error, want 4", n)
		}
		if _, again := resp.Stream.Next(); again != err {
			t.Errorf("Next after the error = %v, want the same error", again)
		}
		resp.Stream.Close()
	}
}

func TestStatusMapping(t *testing.T) {
	body := func(typ, msg string) string {
		return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"}}`
	}
	tests := []struct {
		status     int
		body       string
		retryAfter string
		want       int
		typ        string
		retryable  bool
		wait       time.Duration
		msg        string
	}{
		{400, body("invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\""), "", 400, llm.TypeInvalidRequest, false, 0, "roles must alternate"},
		{401, body("authentication_error", "invalid x-api-key"), "", 502, llm.TypeUpstream, true, 0, "refused Meridian's credentials"},
		{403, body("permission_error", "Your API key does not have permission"), "", 502, llm.TypeUpstream, true, 0, "refused Meridian's credentials"},
		{404, body("not_found_error", "model: claude-nope"), "", 502, llm.TypeUpstream, true, 0, "does not serve this model"},
		{413, body("request_too_large", "Request exceeds the maximum allowed number of bytes."), "", 413, llm.TypeInvalidRequest, false, 0, "request too large"},
		{429, body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit (org 1234)"), "30", 429, llm.TypeRateLimit, true, 30 * time.Second, "rate limiting"},
		{500, body("api_error", "Internal server error at 10.0.0.7"), "", 502, llm.TypeUpstream, true, 0, "failed (status 500)"},
		{529, body("overloaded_error", "Overloaded"), "", 503, llm.TypeOverloaded, true, 0, "is overloaded"},
		{503, body("overloaded_error", "Overloaded"), "5", 503, llm.TypeOverloaded, true, 5 * time.Second, "is overloaded"},
		{422, `not json`, "", 400, llm.TypeInvalidRequest, false, 0, "rejected the request (status 422)"},
	}
	for _, tt := range tests {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
			if tt.retryAfter != "" {
				w.Header().Set("Retry-After", tt.retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}, nil)
		for _, stream := range []bool{false, true} {
			_, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, stream), "")
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("%d: err = %v", tt.status, err)
			}
			if e.Status != tt.want || e.Type != tt.typ || e.Retryable != tt.retryable || e.RetryAfter != tt.wait || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("%d stream=%v: got %+v", tt.status, stream, e)
			}
			for _, leak := range []string{testKey, "1234", "10.0.0.7", "127.0.0.1"} {
				if strings.Contains(e.Message, leak) {
					t.Errorf("%d: message leaks %q: %s", tt.status, leak, e.Message)
				}
			}
		}
	}
}

func TestBadAnswers(t *testing.T) {
	tests := []struct {
		body   string
		status int
		typ    string
	}{
		{`<html>502 Bad Gateway</html>`, 502, llm.TypeUpstream},
		{`{"type":"message","content":"not an array"}`, 502, llm.TypeUpstream},
		{`[]`, 502, llm.TypeUpstream},
		{`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 503, llm.TypeOverloaded},
	}
	for _, tt := range tests {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tt.body) }, nil)
		_, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, false), "")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != tt.status || e.Type != tt.typ || !e.Retryable {
			t.Errorf("%s: err = %v", tt.body, err)
		}
	}
}

func TestUnsupportedOps(t *testing.T) {
	var called atomic.Bool
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) { called.Store(true) }, nil)
	for _, op := range []llm.Op{llm.OpEmbedding, llm.OpCompletion} {
		_, err := a.Do(context.Background(), &llm.Request{Op: op, Model: "m", Body: []byte(`{"model":"m","input":"x","prompt":"x"}`)}, "")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Message, op.String()) {
			t.Errorf("%s: err = %v", op, err)
		}
	}
	if called.Load() {
		t.Fatal("an unsupported request reached the upstream")
	}
}

func TestTranslate(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	tests := []struct {
		name string
		req  string // messages etc., inside {"model":"m", ...}
		want string // fields of the Anthropic request besides model, compared as JSON
	}{
		{"defaults", `"messages":[` + user + `]`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]`},
		{"one system prompt is a string; max_tokens", `"max_tokens":77,"messages":[{"role":"system","content":"be brief"},` + user + `]`,
			`"max_tokens":77,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]`},
		{"same roles merge, empty text is dropped",
			`"messages":[` + user + `,{"role":"user","content":""},{"role":"assistant","content":"a"},{"role":"assistant","content":[{"type":"text","text":"b"}]},{"role":"assistant","content":null}]`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]`},
		{"tool calls without text; empty arguments; foreign ids",
			`"messages":[` + user + `,{"role":"assistant","content":null,"tool_calls":[{"id":"functions.get_time:0","type":"function","function":{"name":"get_time","arguments":""}}]},{"role":"tool","tool_call_id":"functions.get_time:0","content":""}]`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":[{"type":"tool_use","id":"functions_get_time_0","name":"get_time","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions_get_time_0"}]}]`},
		{"tool choice auto, schema without type",
			`"messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"a":{"type":"integer"}}}}}],"tool_choice":"auto"`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"a":{"type":"integer"}}}}],"tool_choice":{"type":"auto"}`},
		{"tool choice none",
			`"messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"none"}`},
		{"tool choice function",
			`"messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f","parameters":null}}],"tool_choice":{"type":"function","function":{"name":"f"}}`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}`},
		{"tool choice without tools is dropped; stop string; n=1",
			`"messages":[` + user + `],"tool_choice":"required","stop":"###","n":1,"max_tokens":9`,
			`"max_tokens":9,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stop_sequences":["###"]`},
		{"unicode and escapes survive",
			`"messages":[{"role":"user","content":"\u00e9\"\\\n\u2028<>&"}]`,
			`"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"\u00e9\"\\\n\u2028<>&"}]}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := chatRequest(t, `{"model":"m",`+tt.req+`}`, false)
			c, err := req.ChatRequest()
			if err != nil {
				t.Fatal(err)
			}
			got, err := encodeRequest(c, "claude-x", false)
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"model":"claude-x",` + tt.want + `}`; !sameJSON(t, got, []byte(want)) {
				t.Fatalf("\n got: %s\nwant: %s", got, want)
			}
		})
	}

	t.Run("top_k and stream from a typed request", func(t *testing.T) {
		k, temp := 40, 1.0
		c := &llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: llm.TextContent("hi")}}, TopK: &k, Temperature: &temp}
		got, err := encodeRequest(c, "claude-x", true)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"model":"claude-x","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":1,"top_k":40,"stream":true}`
		if !sameJSON(t, got, []byte(want)) {
			t.Fatalf("\n got: %s\nwant: %s", got, want)
		}
	})
}

func TestTranslateRefusals(t *testing.T) {
	tests := []struct {
		req   string
		param string
	}{
		{`"n":2,"messages":[{"role":"user","content":"hi"}]`, "n"},
		{`"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}]`, "messages[1].tool_calls[0].function.arguments"},
		{`"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]`, "messages[1].tool_calls[0].function.arguments"},
		{`"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]`, "messages[1].tool_calls[0].id"},
		{`"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]`, "messages[1].tool_call_id"},
		{`"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"ftp://host/a.png"}}]}]`, "messages[0].content[1].image_url.url"},
		{`"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,plain"}}]}]`, "messages[0].content[0].image_url.url"},
		{`"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]`, "messages[0].content[0].type"},
		{`"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://a/b.png"}}]},{"role":"user","content":"hi"}]`, "messages[0].content[0].type"},
		{`"messages":[{"role":"function","name":"f","content":"x"}]`, "messages[0].role"},
		{`"messages":[{"role":"user","content":5}]`, "messages[0].content"},
		{`"messages":[{"role":"system","content":"only a system prompt"}]`, "messages"},
		{`"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"custom","custom":{"name":"x"}}]`, "tools[0].type"},
		{`"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]`, "tools[0].function.parameters"},
	}
	for _, tt := range tests {
		c, err := chatRequest(t, `{"model":"m",`+tt.req+`}`, false).ChatRequest()
		if err != nil {
			t.Fatal(err)
		}
		_, err = encodeRequest(c, "claude-x", false)
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 400 || e.Type != llm.TypeInvalidRequest || e.Param != tt.param {
			t.Errorf("%s: err = %#v, want a 400 naming %s", tt.req, err, tt.param)
		}
	}
}

// TestStreamReusesConnection checks that a finished stream hands its
// connection back to the pool: a new connection per stream would add a
// handshake to every time to first token.
func TestStreamReusesConnection(t *testing.T) {
	var conns atomic.Int32
	sse := readFile(t, "stream_text.sse")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(sse)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	a, err := New(table.Provider{ID: "claude", Kind: table.KindAnthropic, BaseURL: srv.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 5 {
		resp, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true), "")
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := resp.Stream.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		resp.Stream.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 streams used %d connections, want 1", n)
	}
}

func TestChunkTimeoutMidStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(p *table.Provider) { p.ChunkTimeout = 50 * time.Millisecond })
	resp, err := a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true), "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 504 {
		t.Fatalf("err = %v, want a 504 timeout", err)
	}
}

// memCall is an upstream call whose body is already in memory.
type memCall struct{ closed, drained bool }

func (m *memCall) Touch() {}

func (m *memCall) ReadErr(err error) error { return fmt.Errorf("%w: %v", llm.ErrStreamCut, err) }

func (m *memCall) Close(drained bool) { m.closed, m.drained = true, drained }

func TestConnectionRefused(t *testing.T) {
	a, err := New(table.Provider{ID: "claude", Kind: table.KindAnthropic, BaseURL: "http://127.0.0.1:1/v1", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.Do(context.Background(), chatRequest(t, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, false), "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || strings.Contains(err.Error(), testKey) || strings.Contains(e.Message, "127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
}

// TestCounts pins how token counts are read, as gjson's Result.Int read
// them before: numbers truncated and clamped, numeric strings parsed,
// true as 1, anything else 0.
func TestCounts(t *testing.T) {
	tests := []struct {
		raw  string
		want int64
	}{
		{`12`, 12},
		{`-3`, -3},
		{`1.9`, 1},
		{`-1.9`, -1},
		{`1e3`, 1000},
		{`1e30`, math.MaxInt64},
		{`-1e30`, math.MinInt64},
		{`99999999999999999999`, math.MaxInt64},
		{`"42"`, 42},
		{`"4.5"`, 4},
		{`"x"`, 0},
		{`true`, 1},
		{`false`, 0},
		{`null`, 0},
		{`{"a":1}`, 0},
		{`[1]`, 0},
	}
	for _, tt := range tests {
		s := jsonscan.New([]byte(`{"output_tokens":` + tt.raw + `,"input_tokens":7}`))
		var c counts
		c.read(s)
		if err := s.End(); err != nil {
			t.Fatalf("%s: %v", tt.raw, err)
		}
		if int64(c.out) != tt.want || c.in != 7 || c.has != hasOut|hasIn || !c.object {
			t.Errorf("%s: %+v, want out %d", tt.raw, c, tt.want)
		}
	}
	// Counts a usage object lacks keep their values.
	tok := tokens{in: 1, cacheRead: 2, cacheWrite: 3, out: 4}
	c := counts{tokens: tokens{out: 9}, has: hasOut, object: true}
	tok.apply(&c)
	if tok != (tokens{in: 1, cacheRead: 2, cacheWrite: 3, out: 9}) {
		t.Errorf("apply: %+v", tok)
	}
}

// TestDecodeMessageShapes covers what the golden answer does not: several
// text blocks, tool inputs with layout, nulls and unknown fields, and
// bodies that are not one JSON object.
func TestDecodeMessageShapes(t *testing.T) {
	body := `{"unknown":[1,{"x":null}],"content":[` +
		`{"type":"text","text":"Hello, "},{"type":"thinking","thinking":"hmm"},{"text":"world","type":"text"},` +
		`{"type":"tool_use","id":"t1","name":"f","input":{ "a" : [1, 2],` + "\n" + `"b":"x y" }},` +
		`{"type":"tool_use","id":"t2","name":"g","input":null},{"type":"tool_use","id":"t3","name":"h"},` +
		`7,{"type":"text","text":""}],` +
		`"usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":3},"id":"msg_x","model":null,"stop_reason":"tool_use"}`
	c, err := decodeMessage("claude", []byte(body), "fallback", 1)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Choices[0].Message
	if m.Content == nil || *m.Content != "Hello, world" {
		t.Errorf("content %v", m.Content)
	}
	var args []string
	for _, tc := range m.ToolCalls {
		args = append(args, tc.ID+" "+tc.Function.Name+" "+tc.Function.Arguments)
	}
	if want := []string{`t1 f {"a":[1,2],"b":"x y"}`, "t2 g {}", "t3 h {}"}; !reflect.DeepEqual(args, want) {
		t.Errorf("calls %q, want %q", args, want)
	}
	if c.ID != "chatcmpl-msg_x" || c.Model != "fallback" || c.Choices[0].FinishReason != llm.FinishToolCalls ||
		*c.Usage != (llm.Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}) {
		t.Errorf("completion %+v usage %+v", c, c.Usage)
	}

	for _, bad := range []string{
		``, `null`, `"x"`, `{"content":[]`, `{"content":[]} x`, `{"content":[]}{}`, `{"content":[}`,
		`{"content":{}}`, `{"content":null}`, `{}`, `{"content":"\u12"}`, `{"content":[],"id":01}`,
	} {
		_, err := decodeMessage("claude", []byte(bad), "m", 1)
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadGateway || !strings.Contains(e.Message, "not a Messages response") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	// An error body with status 200; an error without a message.
	for body, want := range map[string]string{
		`{"type":"error","error":{"type":"api_error","message":"Internal \"oops\""}}`: `reported an error: Internal "oops"`,
		`{"error":"x","type":"error"}`: "reported an error: unknown error",
	} {
		_, err := decodeMessage("claude", []byte(body), "m", 1)
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadGateway || !strings.Contains(e.Message, want) {
			t.Errorf("%s: err = %v", body, err)
		}
	}
}

// TestErrorBodies reads error bodies in both shapes Vertex AI sends. The
// details must not share the body's memory: the SSE reader reuses it.
func TestErrorBodies(t *testing.T) {
	tests := []struct {
		body         string
		anth, vertex upstream.ErrorDetail
	}{
		{`{"type":"error","error":{"type":"rate_limit_error","message":"Slow \u00e9own"}}`,
			upstream.ErrorDetail{Type: "rate_limit_error", Message: "Slow éown"}, upstream.ErrorDetail{Type: "rate_limit_error", Message: "Slow éown"}},
		{`{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}`,
			upstream.ErrorDetail{Message: "Quota exceeded"}, upstream.ErrorDetail{Message: "Quota exceeded"}},
		{`{"error":{"code":403,"status":"PERMISSION_DENIED"}}`,
			upstream.ErrorDetail{}, upstream.ErrorDetail{Code: "PERMISSION_DENIED"}},
		// The walk stops at the first error object: what follows is
		// not read.
		{`{"error":{"type":"a","message":"m"},"error":{"type":"b"}, broken`,
			upstream.ErrorDetail{Type: "a", Message: "m"}, upstream.ErrorDetail{Type: "a", Message: "m"}},
		{`[{"error":{"type":"a"}}]`, upstream.ErrorDetail{}, upstream.ErrorDetail{}},
		{`<html>`, upstream.ErrorDetail{}, upstream.ErrorDetail{}},
		{`{"error":"rate limited"}`, upstream.ErrorDetail{}, upstream.ErrorDetail{}},
	}
	for _, tt := range tests {
		b := []byte(tt.body)
		anth, vertex := parseError(b), parseErrorVertex(b)
		for i := range b {
			b[i] = 'X'
		}
		if anth != tt.anth || vertex != tt.vertex {
			t.Errorf("%s: got %+v and %+v, want %+v and %+v", tt.body, anth, vertex, tt.anth, tt.vertex)
		}
	}
}

func TestInputTokens(t *testing.T) {
	tests := []struct {
		body string
		n    int64
		ok   bool
	}{
		{`{"input_tokens":12}`, 12, true},
		{` {"other":[1,2],"input_tokens": 1.5 } `, 1, true},
		{`{"input_tokens":12, this is not read`, 12, true},
		{`{"input_tokens":"12"}`, 0, false},
		{`{"input_tokens":null}`, 0, false},
		{`{"tokens":12}`, 0, false},
		{`[{"input_tokens":12}]`, 0, false},
		{`{"x":tru,"input_tokens":12}`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		if n, ok := inputTokens([]byte(tt.body)); n != tt.n || ok != tt.ok {
			t.Errorf("%s: %d %v, want %d %v", tt.body, n, ok, tt.n, tt.ok)
		}
	}
}

// TestMalformedEvents: an event that is not valid JSON counts for what
// precedes its first syntax error, and is otherwise passed over; it is
// not an error of the stream.
func TestMalformedEvents(t *testing.T) {
	sse := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\u00e9\"}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"b\n\n" +
		"event: content_block_delta\ndata: not json\n\n" +
		"data: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"c\"},\"type\":\"content_block_delta\"}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}} trailing\n\n" +
		"event: message_stop\ndata: {\n\n"
	s := newStream("claude", &memCall{}, strings.NewReader(sse), "m")
	var got []string
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.Usage != nil:
			got = append(got, fmt.Sprintf("usage %d/%d", c.Usage.PromptTokens, c.Usage.CompletionTokens))
		case c.Choices[0].FinishReason != "":
			got = append(got, "finish "+c.Choices[0].FinishReason)
		default:
			got = append(got, "content "+c.Choices[0].Content)
		}
	}
	want := []string{"content ", "content aé", "content c", "finish stop", "usage 3/2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chunks %q, want %q", got, want)
	}
}
