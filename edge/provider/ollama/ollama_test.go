package ollama

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
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

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

func adapter(t *testing.T, h http.HandlerFunc, edit func(*table.Provider)) *Adapter {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := table.Provider{ID: "local", Kind: table.KindOllama, BaseURL: srv.URL + "/"}
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

func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		panic(err) // a missing fixture; handlers call this too, off the test goroutine
	}
	return b
}

// sameJSON reports an error unless got and want hold the same JSON
// value. It does not stop the test, so handlers may call it too.
func sameJSON(t testing.TB, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("got is not JSON: %v\n%s", err, got)
		return false
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Errorf("want is not JSON: %v\n%s", err, want)
		return false
	}
	if !reflect.DeepEqual(g, w) {
		gi, _ := json.MarshalIndent(g, "", "  ")
		wi, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("JSON differs\ngot:\n%s\nwant:\n%s", gi, wi)
		return false
	}
	return true
}

// goldenChat is the golden OpenAI request, with the one field the OpenAI
// format cannot carry set the way another surface would.
func goldenChat(t testing.TB, stream bool) *llm.Request {
	req := &llm.Request{ID: "req-1", Op: llm.OpChat, Model: "local-llama", Stream: stream, Body: golden(t, "chat_request.openai.json")}
	c, err := req.ChatRequest()
	if err != nil {
		t.Fatal(err)
	}
	k := 40
	c.TopK = &k
	return req
}

func chatReq(stream bool) *llm.Request {
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "alias", Stream: stream,
		Body: []byte(`{"model":"alias","messages":[{"role":"user","content":"hi"}]}`)}
}

func TestChatGolden(t *testing.T) {
	tests := []struct{ name, reply, want string }{
		{"text", "chat_response_text.ollama.json", "chat_response_text.openai.json"},
		{"tool calls", "chat_response_tools.ollama.json", "chat_response_tools.openai.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/api/chat" {
					t.Errorf("%s %s, want POST /api/chat", r.Method, r.URL.Path)
				}
				if r.Header.Get("Authorization") != "" {
					t.Error("Authorization sent with no key configured")
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				b, _ := io.ReadAll(r.Body)
				sameJSON(t, b, golden(t, "chat_request.ollama.json"))
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.Write(golden(t, tt.reply))
			}, nil)
			resp, err := a.Do(context.Background(), goldenChat(t, false), "llama3.2:3b")
			if err != nil {
				t.Fatal(err)
			}
			cc := resp.Completion
			if cc == nil || resp.Body != nil || resp.Stream != nil {
				t.Fatalf("response %+v: want a Completion only", resp)
			}
			if !strings.HasPrefix(cc.ID, "chatcmpl-") || len(cc.ID) < 20 {
				t.Errorf("id %q", cc.ID)
			}
			cc.ID = "chatcmpl-ID"
			for i, tc := range cc.Choices[0].Message.ToolCalls {
				if tc.ID == "" {
					t.Errorf("tool call %d has no id", i)
				}
				if !strings.HasPrefix(tc.ID, "call_p7o") {
					cc.Choices[0].Message.ToolCalls[i].ID = "call_GENERATED"
				}
			}
			got, _ := json.Marshal(cc)
			sameJSON(t, got, golden(t, tt.want))
			if resp.Usage != *cc.Usage || resp.Usage.TotalTokens == 0 {
				t.Errorf("response usage %+v, completion usage %+v", resp.Usage, cc.Usage)
			}
		})
	}
}

// readStream reads s to its end, returning each chunk as OpenAI JSON.
func readStream(t testing.TB, s llm.Stream) ([][]byte, error) {
	t.Helper()
	var out [][]byte
	for {
		c, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if c.Raw != nil {
			t.Fatal("a translated chunk carries Raw")
		}
		out = append(out, c.AppendJSON(nil))
	}
}

func TestChatStreamGolden(t *testing.T) {
	for _, name := range []string{"chat_stream_text", "chat_stream_tools"} {
		t.Run(name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				var body struct{ Stream *bool }
				json.Unmarshal(b, &body)
				if body.Stream == nil || !*body.Stream {
					t.Errorf("stream not sent as true: %s", b)
				}
				if acc := r.Header.Get("Accept"); acc != "application/x-ndjson" {
					t.Errorf("Accept %q", acc)
				}
				w.Header().Set("Content-Type", "application/x-ndjson")
				// One line per write, as Ollama flushes them.
				for _, line := range bytes.SplitAfter(golden(t, name+".ollama.ndjson"), []byte("\n")) {
					w.Write(line)
					w.(http.Flusher).Flush()
				}
			}, nil)
			resp, err := a.Do(context.Background(), goldenChat(t, true), "llama3.2:3b")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Stream.Close()
			if _, ok := resp.Stream.Usage(); ok {
				t.Error("usage reported before the stream ended")
			}
			chunks, err := readStream(t, resp.Stream)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Split(bytes.TrimSpace(golden(t, name+".openai.jsonl")), []byte("\n"))
			if len(chunks) != len(want) {
				t.Fatalf("%d chunks, want %d:\n%s", len(chunks), len(want), bytes.Join(chunks, []byte("\n")))
			}
			var id string
			for i := range chunks {
				var c struct{ ID string }
				json.Unmarshal(chunks[i], &c)
				if i == 0 {
					id = c.ID
				}
				if !strings.HasPrefix(c.ID, "chatcmpl-") || c.ID != id {
					t.Fatalf("chunk %d id %q, first %q", i, c.ID, id)
				}
				if !sameJSON(t, bytes.ReplaceAll(chunks[i], []byte(id), []byte("chatcmpl-ID")), want[i]) {
					t.Fatalf("chunk %d", i)
				}
			}
			u, ok := resp.Stream.Usage()
			if !ok || u.TotalTokens == 0 {
				t.Errorf("usage %+v %v", u, ok)
			}
		})
	}
}

func TestAPIKeyIsBearer(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer proxy-secret" {
			t.Errorf("Authorization %q", got)
		}
		if got := r.Header.Get("X-Request-Id"); got != "r1" {
			t.Errorf("X-Request-Id %q", got)
		}
		io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":"ok"},"done":true,"done_reason":"stop"}`)
	}, func(p *table.Provider) { p.APIKey = "proxy-secret" })
	if _, err := a.Do(context.Background(), chatReq(false), ""); err != nil {
		t.Fatal(err)
	}
}

// TestToolRoundTrip checks that a conversation in OpenAI's shape, with
// the calls Ollama made and their results, goes back to Ollama in its
// own: arguments as objects, results named by function.
func TestToolRoundTrip(t *testing.T) {
	var c llm.ChatRequest
	json.Unmarshal([]byte(`{"model":"m","messages":[
		{"role":"user","content":"weather in Paris and Oslo?"},
		{"role":"assistant","content":"Checking.","tool_calls":[
			{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
			{"id":"call_2","type":"function","function":{"name":"weather","arguments":""}}]},
		{"role":"tool","tool_call_id":"call_2","content":"-3"},
		{"role":"tool","tool_call_id":"call_1","content":"18"},
		{"role":"tool","tool_call_id":"call_unknown","content":"?"}]}`), &c)
	b, err := encodeChat(nil, &c, "m", true)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, b, []byte(`{"model":"m","stream":true,"messages":[
		{"role":"user","content":"weather in Paris and Oslo?"},
		{"role":"assistant","content":"Checking.","tool_calls":[
			{"id":"call_1","function":{"name":"weather","arguments":{"city":"Paris"}}},
			{"id":"call_2","function":{"name":"weather","arguments":{}}}]},
		{"role":"tool","content":"-3","tool_name":"weather","tool_call_id":"call_2"},
		{"role":"tool","content":"18","tool_name":"weather","tool_call_id":"call_1"},
		{"role":"tool","content":"?","tool_call_id":"call_unknown"}]}`))
}

func TestToolChoice(t *testing.T) {
	base := `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[
		{"type":"function","function":{"name":"a","parameters":{"type":"object"}}},
		{"type":"function","function":{"name":"b"}}]`
	tests := []struct{ choice, wantTools string }{
		{`"auto"`, `[{"type":"function","function":{"name":"a","parameters":{"type":"object"}}},{"type":"function","function":{"name":"b"}}]`},
		{`"required"`, `[{"type":"function","function":{"name":"a","parameters":{"type":"object"}}},{"type":"function","function":{"name":"b"}}]`},
		{`{"type":"function","function":{"name":"b"}}`, `[{"type":"function","function":{"name":"b"}}]`},
		{`"none"`, ``},
	}
	for _, tt := range tests {
		var c llm.ChatRequest
		if err := json.Unmarshal([]byte(base+`,"tool_choice":`+tt.choice+`}`), &c); err != nil {
			t.Fatal(err)
		}
		b, err := encodeChat(nil, &c, "m", false)
		if err != nil {
			t.Fatalf("%s: %v", tt.choice, err)
		}
		var got struct{ Tools json.RawMessage }
		json.Unmarshal(b, &got)
		if tt.wantTools == "" {
			if got.Tools != nil {
				t.Errorf("%s: tools sent: %s", tt.choice, got.Tools)
			}
			continue
		}
		sameJSON(t, got.Tools, []byte(tt.wantTools))
	}
}

func TestFormatAndOptions(t *testing.T) {
	tests := []struct{ extra, want string }{
		{`"response_format":{"type":"json_object"},"max_tokens":7,"stop":"END"`,
			`{"model":"m","stream":false,"messages":[{"role":"user","content":""}],"format":"json","options":{"num_predict":7,"stop":["END"]}}`},
		{`"response_format":{"type":"text"},"temperature":0`,
			`{"model":"m","stream":false,"messages":[{"role":"user","content":""}],"options":{"temperature":0}}`},
		{`"response_format":{"type":"json_schema","json_schema":{"name":"x"}}`,
			`{"model":"m","stream":false,"messages":[{"role":"user","content":""}],"format":"json"}`},
	}
	for _, tt := range tests {
		var c llm.ChatRequest
		if err := json.Unmarshal([]byte(`{"messages":[{"role":"user","content":null}],`+tt.extra+`}`), &c); err != nil {
			t.Fatal(err)
		}
		b, err := encodeChat(nil, &c, "m", false)
		if err != nil {
			t.Fatalf("%s: %v", tt.extra, err)
		}
		sameJSON(t, b, []byte(tt.want))
	}
}

func TestRequestRefused(t *testing.T) {
	tests := []struct{ name, body, param string }{
		{"n", `{"n":2,"messages":[]}`, "n"},
		{"role", `{"messages":[{"role":"wizard","content":"x"}]}`, "messages[0].role"},
		{"http image", `{"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}`, "messages[0].content[1].image_url.url"},
		{"data url not base64", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/svg+xml,<svg/>"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"audio part", `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}`, "messages[0].content[0].type"},
		{"content number", `{"messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"arguments not object", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"arguments not json", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"tool type", `{"messages":[],"tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{"tool_choice missing", `{"messages":[],"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"zz"}}}`, "tool_choice"},
		{"response_format", `{"messages":[],"response_format":{"type":"xml"}}`, "response_format.type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				t.Error("a refused request reached the upstream")
			}, nil)
			req := &llm.Request{Op: llm.OpChat, Model: "m", Body: []byte(tt.body)}
			_, err := a.Do(context.Background(), req, "")
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Type != llm.TypeInvalidRequest || e.Param != tt.param || e.Message == "" {
				t.Fatalf("err = %#v, want a 400 naming %s", err, tt.param)
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		status     int
		body       string
		header     string
		want       int
		typ        string
		retryable  bool
		retryAfter time.Duration
		msg        string
	}{
		{429, `{"error":"too many requests"}`, "7", 429, llm.TypeRateLimit, true, 7 * time.Second, "rate limiting"},
		{500, `{"error":"llama runner process has terminated: cuda at /srv/models/x"}`, "", 502, llm.TypeUpstream, true, 0, "failed (status 500)"},
		{503, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`, "", 502, llm.TypeUpstream, true, 0, "failed (status 503)"},
		{529, ``, "3", 503, llm.TypeOverloaded, true, 3 * time.Second, "overloaded"},
		{404, `{"error":"model 'llama9' not found"}`, "", 502, llm.TypeUpstream, true, 0, "does not serve this model"},
		{401, `{"error":"unauthorized"}`, "", 502, llm.TypeUpstream, true, 0, "refused Meridian's credentials"},
		{400, `{"error":"invalid options: num_predict must be an integer"}`, "", 400, llm.TypeInvalidRequest, false, 0, "invalid options: num_predict must be an integer"},
		{400, `<html>bad gateway config</html>`, "", 400, llm.TypeInvalidRequest, false, 0, "rejected the request (status 400)"},
	}
	for _, tt := range tests {
		a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
			if tt.header != "" {
				w.Header().Set("Retry-After", tt.header)
			}
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}, func(p *table.Provider) { p.APIKey = "proxy-secret" })
		for _, stream := range []bool{false, true} {
			_, err := a.Do(context.Background(), chatReq(stream), "m")
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("%d: err = %v", tt.status, err)
			}
			if e.Status != tt.want || e.Type != tt.typ || e.Retryable != tt.retryable || e.RetryAfter != tt.retryAfter || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("%d: got %+v", tt.status, e)
			}
			for _, leak := range []string{"proxy-secret", "/srv/models", "127.0.0.1"} {
				if strings.Contains(e.Message, leak) {
					t.Errorf("%d: message leaks %q: %s", tt.status, leak, e.Message)
				}
			}
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	a, err := New(table.Provider{ID: "dead", Kind: table.KindOllama, BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Do(context.Background(), chatReq(false), "m")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || strings.Contains(e.Message, "127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamCut(t *testing.T) {
	lines := bytes.SplitAfter(golden(t, "chat_stream_text.ollama.ndjson"), []byte("\n"))
	tests := []struct {
		name string
		body []byte
		// chunks before the error
		chunks int
	}{
		{"between lines", bytes.Join(lines[:2], nil), 2},
		{"inside a line", append(bytes.Join(lines[:2], nil), lines[2][:30]...), 2},
		{"nothing", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
				w.Write(tt.body)
			}, nil)
			resp, err := a.Do(context.Background(), chatReq(true), "m")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Stream.Close()
			chunks, err := readStream(t, resp.Stream)
			if !errors.Is(err, llm.ErrStreamCut) {
				t.Fatalf("err = %v, want ErrStreamCut", err)
			}
			if len(chunks) != tt.chunks {
				t.Fatalf("%d chunks before the cut, want %d", len(chunks), tt.chunks)
			}
			if _, ok := resp.Stream.Usage(); ok {
				t.Error("a cut stream reports usage")
			}
		})
	}
}

func TestStreamErrorLine(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"model":"m","created_at":"2025-05-27T22:54:57Z","message":{"role":"assistant","content":"Hel"},"done":false}`+"\n")
		io.WriteString(w, `{"error":"an error was encountered while running the model: unexpected EOF"}`+"\n")
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	chunks, err := readStream(t, resp.Stream)
	var e *llm.Error
	if len(chunks) != 1 || !errors.As(err, &e) || e.Status != 502 || e.Type != llm.TypeUpstream || e.Cause == nil || !strings.Contains(e.Cause.Error(), "unexpected EOF") {
		t.Fatalf("%d chunks, err = %#v", len(chunks), err)
	}
	if strings.Contains(e.Message, "unexpected EOF") {
		t.Errorf("the upstream's error text reached the client message: %s", e.Message)
	}
}

func TestStreamMalformedLine(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: {\"choices\":[]}\n\n")
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamLineTooLong(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"message":{"content":"`)
		w.Write(bytes.Repeat([]byte("a"), maxLine))
		io.WriteString(w, `"},"done":false}`+"\n")
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	_, err = resp.Stream.Next()
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 502 || !strings.Contains(e.Message, "too long") {
		t.Fatalf("err = %v", err)
	}
}

// TestStreamLongLine checks that a line longer than the read buffer (a
// big tool call) is assembled, not refused.
func TestStreamLongLine(t *testing.T) {
	big := strings.Repeat("x", 3*readBuffer)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"message":{"role":"assistant","content":"`+big+`"},"done":false}`+"\n")
		io.WriteString(w, `{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","eval_count":3}`) // no final newline
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	c, err := resp.Stream.Next()
	if err != nil || c.Choices[0].Content != big {
		t.Fatalf("first chunk: %v", err)
	}
	if c, err = resp.Stream.Next(); err != nil || c.Choices[0].FinishReason != llm.FinishLength {
		t.Fatalf("finish chunk: %+v %v", c, err)
	}
	if c, err = resp.Stream.Next(); err != nil || len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 3 {
		t.Fatalf("usage chunk: %+v %v", c, err)
	}
	if _, err = resp.Stream.Next(); err != io.EOF {
		t.Fatalf("err = %v, want EOF", err)
	}
}

// TestStreamEmptyAnswer checks the chunk sequence when the done line is
// the only line: role, finish, usage.
func TestStreamEmptyAnswer(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"model":"m","created_at":"2025-05-27T22:54:57Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":5,"eval_count":0}`+"\n")
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	var got []string
	for {
		c, err := resp.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(c.AppendJSON(nil)))
	}
	if len(got) != 3 || !strings.Contains(got[0], `"delta":{"role":"assistant","content":""}`) ||
		!strings.Contains(got[1], `"delta":{},"logprobs":null,"finish_reason":"stop"`) || !strings.Contains(got[2], `"choices":[],"usage":{"prompt_tokens":5`) {
		t.Fatalf("chunks:\n%s", strings.Join(got, "\n"))
	}
}

func TestStreamBuffered(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(golden(t, "chat_stream_text.ollama.ndjson"))
	}, nil)
	resp, err := a.Do(context.Background(), chatReq(true), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	b := resp.Stream.(llm.Buffered)
	var seen []int
	for {
		if _, err := resp.Stream.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, b.Buffered())
	}
	// After the text, done line is read: the finish and usage chunks are
	// in memory; after the usage chunk nothing is left.
	if n := len(seen); n != 5 || seen[n-3] == 0 || seen[n-2] == 0 || seen[n-1] != 0 {
		t.Fatalf("Buffered after each chunk: %v", seen)
	}
}

func TestChunkTimeoutMidStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"message":{"role":"assistant","content":"a"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(p *table.Provider) { p.ChunkTimeout = 50 * time.Millisecond })
	resp, err := a.Do(context.Background(), chatReq(true), "m")
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

// TestStreamReusesConnection checks that a finished stream hands its
// connection back to the pool.
func TestStreamReusesConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write(golden(t, "chat_stream_text.ollama.ndjson"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	a, err := New(table.Provider{ID: "local", Kind: table.KindOllama, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 5 {
		resp, err := a.Do(context.Background(), chatReq(true), "m")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readStream(t, resp.Stream); err != nil {
			t.Fatal(err)
		}
		resp.Stream.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 streams used %d connections, want 1", n)
	}
}

func TestEmbedGolden(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/embed" {
			t.Errorf("path %s", r.URL.Path)
		}
		b, _ := io.ReadAll(r.Body)
		sameJSON(t, b, golden(t, "embed_request.ollama.json"))
		w.Write(golden(t, "embed_response.ollama.json"))
	}, nil)
	req := &llm.Request{Op: llm.OpEmbedding, Model: "embed-small", Body: golden(t, "embed_request.openai.json")}
	resp, err := a.Do(context.Background(), req, "nomic-embed-text")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, resp.Body, golden(t, "embed_response.openai.json"))
	if resp.Usage != (llm.Usage{PromptTokens: 8, TotalTokens: 8}) {
		t.Errorf("usage %+v", resp.Usage)
	}
}

func TestEmbedBase64(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(golden(t, "embed_response.ollama.json"))
	}, nil)
	req := &llm.Request{Op: llm.OpEmbedding, Model: "e", Body: []byte(`{"model":"e","input":"Why is the sky blue?","encoding_format":"base64"}`)}
	resp, err := a.Do(context.Background(), req, "nomic-embed-text")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Data []struct {
			Index     int
			Embedding string
		}
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	want := [][]float32{{0.010071029, -0.0017594862, 0.05007221, 0.04692972}, {-0.0098027075, 0.06042469, 0.025257962, -0.006364387}}
	if len(got.Data) != len(want) {
		t.Fatalf("%s", resp.Body)
	}
	for i, d := range got.Data {
		raw, err := base64.StdEncoding.DecodeString(d.Embedding)
		if err != nil || d.Index != i || len(raw) != 4*len(want[i]) {
			t.Fatalf("item %d: %v %s", i, err, resp.Body)
		}
		for j, w := range want[i] {
			if f := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])); f != w {
				t.Errorf("item %d[%d] = %v, want %v", i, j, f, w)
			}
		}
	}
}

func TestEmbedRefused(t *testing.T) {
	tests := []struct{ body, param string }{
		{`{"model":"e","input":[[1,2,3]]}`, "input"},
		{`{"model":"e","input":[1,2,3]}`, "input"},
		{`{"model":"e"}`, "input"},
		{`{"model":"e","input":"x","encoding_format":"int8"}`, "encoding_format"},
		{`{"model":"e","input":"x","dimensions":-1}`, "dimensions"},
	}
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		t.Error("a refused request reached the upstream")
	}, nil)
	for _, tt := range tests {
		_, err := a.Do(context.Background(), &llm.Request{Op: llm.OpEmbedding, Model: "e", Body: []byte(tt.body)}, "")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 400 || e.Param != tt.param {
			t.Errorf("%s: err = %v, want a 400 naming %s", tt.body, err, tt.param)
		}
	}
}

func TestCompletionUnsupported(t *testing.T) {
	a := adapter(t, func(w http.ResponseWriter, r *http.Request) {
		t.Error("an unsupported request reached the upstream")
	}, nil)
	_, err := a.Do(context.Background(), &llm.Request{Op: llm.OpCompletion, Model: "m", Body: []byte(`{"prompt":"x"}`)}, "")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Message, "completion") {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeChatRefusesGarbage(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"done":true}`, `{"message":"x"}`, `{"error":"boom"}`, `{"message":{`} {
		_, err := decodeChat([]byte(body), "m")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != 502 {
			t.Errorf("%q: err = %v", body, err)
		}
	}
}

func TestEngineSettings(t *testing.T) {
	var c llm.ChatRequest
	json.Unmarshal([]byte(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`), &c)
	tests := []struct {
		e         Engine
		chat, emb string
	}{
		{Engine{}, `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"num_predict":5}}`,
			`{"model":"m","input":"x"}`},
		{Engine{KeepAlive: -1, NumThread: 1}, `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"num_predict":5,"num_thread":1},"keep_alive":-1}`,
			`{"model":"m","input":"x","keep_alive":-1}`},
		{Engine{KeepAlive: 90 * time.Second}, `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"num_predict":5},"keep_alive":"1m30s"}`,
			`{"model":"m","input":"x","keep_alive":"1m30s"}`},
	}
	for _, tt := range tests {
		b, err := encodeChatFor(nil, &c, "m", false, tt.e)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, b, []byte(tt.chat))
		b, _, err = encodeEmbedFor([]byte(`{"model":"e","input":"x"}`), "m", tt.e)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, b, []byte(tt.emb))
	}
}
