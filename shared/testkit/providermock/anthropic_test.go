package providermock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/sse"
)

// jsonKeys returns the sorted keys of the JSON object b, comma-joined.
func jsonKeys(t *testing.T, b []byte) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %s: %v", b, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

type namedEvent struct {
	name string
	data []byte
}

// readSSE reads every event of a stream with the project's SSE reader; it
// returns the events and the error that ended them (nil at a clean end).
func readSSE(r io.Reader) ([]namedEvent, error) {
	rd := sse.NewReader(r)
	var out []namedEvent
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, namedEvent{ev.Name, bytes.Clone(ev.Data)})
	}
}

func eventNames(evs []namedEvent) []string {
	names := make([]string, len(evs))
	for i, e := range evs {
		names[i] = e.name
	}
	return names
}

var anthropicHeaders = map[string]string{"anthropic-version": "2023-06-01"}

func anthropicBody(text string, extra map[string]any) map[string]any {
	m := map[string]any{
		"model":      "claude-sonnet-4-20250514",
		"max_tokens": 1024,
		"system":     "be brief",
		"messages":   []map[string]any{{"role": "user", "content": text}},
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func postAnthropic(t *testing.T, base string, body any) *http.Response {
	t.Helper()
	return doJSON(t, context.Background(), http.MethodPost, base+"/v1/messages", body, anthropicHeaders)
}

type anthropicMessage struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"`
	Role         string  `json:"role"`
	Model        string  `json:"model"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Content      []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	Usage struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

type anthropicErr struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkAnthropicError asserts status and Anthropic's exact error shape.
func checkAnthropicError(t *testing.T, resp *http.Response, status int, typ, message string) {
	t.Helper()
	b := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var e anthropicErr
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	var inner struct{ Error json.RawMessage }
	_ = json.Unmarshal(b, &inner)
	if jsonKeys(t, b) != "error,type" || jsonKeys(t, inner.Error) != "message,type" {
		t.Fatalf("shape %s", b)
	}
	if e.Type != "error" || e.Error.Type != typ || !strings.Contains(e.Error.Message, message) {
		t.Fatalf("error %s, want type %s message ~%q", b, typ, message)
	}
}

func TestAnthropicPlain(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindAnthropic})
	resp := postAnthropic(t, base, anthropicBody("say hello to me", nil))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(resp.Header.Get("Request-Id"), "req_") {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	b := readAll(t, resp)
	if got := jsonKeys(t, b); got != "content,id,model,role,stop_reason,stop_sequence,type,usage" {
		t.Fatalf("keys %s", got)
	}
	var m anthropicMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude-sonnet-4-20250514" {
		t.Fatalf("head %s", b)
	}
	if len(m.Content) != 1 || m.Content[0].Type != "text" || m.Content[0].Text != Content(16) {
		t.Fatalf("content %s", b)
	}
	if m.StopReason == nil || *m.StopReason != "end_turn" || m.StopSequence != nil || !bytes.Contains(b, []byte(`"stop_sequence":null`)) {
		t.Fatalf("stop %s", b)
	}
	// "be brief" + "say hello to me" = 6 words, as the openai kind counts.
	if m.Usage.InputTokens != 6 || m.Usage.OutputTokens != 16 {
		t.Fatalf("usage %+v", m.Usage)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/messages" || reqs[0].Header.Get("Anthropic-Version") != "2023-06-01" || reqs[0].Done.IsZero() {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestAnthropicContentBlocksAndMaxTokens(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic, Chunks: 10})
	body := map[string]any{
		"model":      "claude-3-5-haiku-20241022",
		"max_tokens": 4,
		"system":     []map[string]any{{"type": "text", "text": "one two"}},
		"messages": []map[string]any{
			{"role": "user", "content": "earlier #mock chunks=1"},
			{"role": "assistant", "content": []map[string]any{{"type": "text", "text": "ok"}}},
			{"role": "user", "content": []map[string]any{
				{"type": "text", "text": "three"},
				{"type": "image", "source": map[string]any{"type": "base64", "media_type": "image/png", "data": "AA=="}},
				{"type": "text", "text": "#mock chunks=6"},
			}},
		},
	}
	var m anthropicMessage
	resp := postAnthropic(t, base, body)
	decodeBody(t, resp, &m)
	// The last user message's directive wins: 6 chunks, capped at 4.
	if *m.StopReason != "max_tokens" || m.Content[0].Text != Content(4) || m.Usage.OutputTokens != 4 {
		t.Fatalf("got %+v", m)
	}
}

func streamAnthropic(t *testing.T, base string, body map[string]any) []namedEvent {
	t.Helper()
	body["stream"] = true
	resp := postAnthropic(t, base, body)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs, err := readSSE(resp.Body)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	for _, e := range evs {
		var v struct{ Type string }
		if err := json.Unmarshal(e.data, &v); err != nil || v.Type != e.name {
			t.Fatalf("event %q carries %s", e.name, e.data)
		}
	}
	return evs
}

func anthropicOrder(deltas int, tail ...string) []string {
	names := []string{"message_start", "content_block_start", "ping"}
	for range deltas {
		names = append(names, "content_block_delta")
	}
	return append(names, tail...)
}

func TestAnthropicStream(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic, Chunks: 5})
	evs := streamAnthropic(t, base, anthropicBody("hello there #mock chunks=7", nil))
	if got, want := eventNames(evs), anthropicOrder(7, "content_block_stop", "message_delta", "message_stop"); !slices.Equal(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
	var start struct {
		Message struct {
			anthropicMessage
			Content []json.RawMessage `json:"content"`
		} `json:"message"`
	}
	if err := json.Unmarshal(evs[0].data, &start); err != nil {
		t.Fatal(err)
	}
	sm := start.Message
	if !strings.HasPrefix(sm.ID, "msg_") || sm.Type != "message" || sm.Role != "assistant" || sm.Model != "claude-sonnet-4-20250514" ||
		sm.Content == nil || len(sm.Content) != 0 || sm.StopReason != nil || sm.Usage.InputTokens != 6 || sm.Usage.OutputTokens != 1 {
		t.Fatalf("message_start %s", evs[0].data)
	}
	if string(evs[1].data) != `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` {
		t.Fatalf("content_block_start %s", evs[1].data)
	}
	var text strings.Builder
	for _, e := range evs[3:10] {
		var d struct {
			Index int `json:"index"`
			Delta struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"delta"`
		}
		if err := json.Unmarshal(e.data, &d); err != nil || d.Index != 0 || d.Delta.Type != "text_delta" {
			t.Fatalf("delta %s: %v", e.data, err)
		}
		text.WriteString(d.Delta.Text)
	}
	if text.String() != Content(7) {
		t.Fatalf("text %q", text.String())
	}
	if string(evs[10].data) != `{"type":"content_block_stop","index":0}` ||
		string(evs[11].data) != `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}` {
		t.Fatalf("tail %s %s", evs[10].data, evs[11].data)
	}
}

var anthropicTools = []map[string]any{
	{"name": "get_time", "input_schema": map[string]any{"type": "object"}},
	{"name": "get_weather", "description": "weather", "input_schema": map[string]any{"type": "object"}},
}

func TestAnthropicToolCall(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	cases := []struct {
		name string
		body map[string]any
		tool string // "" means a text answer
	}{
		{"directive", anthropicBody("weather? #mock tool_call=get_weather", map[string]any{"tools": anthropicTools}), "get_weather"},
		{"tool_choice tool", anthropicBody("weather?", map[string]any{"tools": anthropicTools, "tool_choice": map[string]any{"type": "tool", "name": "get_weather"}}), "get_weather"},
		{"tool_choice any", anthropicBody("weather?", map[string]any{"tools": anthropicTools, "tool_choice": map[string]any{"type": "any"}}), "get_time"},
		{"undeclared", anthropicBody("weather? #mock tool_call=get_stock", map[string]any{"tools": anthropicTools}), ""},
		{"no tools", anthropicBody("weather? #mock tool_call=get_weather", nil), ""},
		{"tool_choice none", anthropicBody("weather? #mock tool_call=get_weather", map[string]any{"tools": anthropicTools, "tool_choice": map[string]any{"type": "none"}}), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m anthropicMessage
			decodeBody(t, postAnthropic(t, base, tc.body), &m)
			if tc.tool == "" {
				if *m.StopReason != "end_turn" || len(m.Content) != 1 || m.Content[0].Type != "text" {
					t.Fatalf("want text, got %+v", m)
				}
				return
			}
			if *m.StopReason != "tool_use" || len(m.Content) != 1 || m.Usage.OutputTokens != 5 {
				t.Fatalf("message %+v", m)
			}
			c := m.Content[0]
			if c.Type != "tool_use" || !strings.HasPrefix(c.ID, "toolu_") || c.Name != tc.tool || string(c.Input) != ToolArguments {
				t.Fatalf("block %+v", c)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		evs := streamAnthropic(t, base, anthropicBody("weather? #mock tool_call=get_weather", map[string]any{"tools": anthropicTools}))
		if got, want := eventNames(evs), anthropicOrder(len(toolFragments), "content_block_stop", "message_delta", "message_stop"); !slices.Equal(got, want) {
			t.Fatalf("order %q, want %q", got, want)
		}
		var start struct {
			Index        int `json:"index"`
			ContentBlock struct {
				Type  string          `json:"type"`
				ID    string          `json:"id"`
				Name  string          `json:"name"`
				Input json.RawMessage `json:"input"`
			} `json:"content_block"`
		}
		if err := json.Unmarshal(evs[1].data, &start); err != nil {
			t.Fatal(err)
		}
		cb := start.ContentBlock
		if start.Index != 0 || cb.Type != "tool_use" || !strings.HasPrefix(cb.ID, "toolu_") || cb.Name != "get_weather" || string(cb.Input) != "{}" {
			t.Fatalf("content_block_start %s", evs[1].data)
		}
		var args strings.Builder
		for _, e := range evs[3 : 3+len(toolFragments)] {
			var d struct {
				Delta struct {
					Type        string `json:"type"`
					PartialJSON string `json:"partial_json"`
				} `json:"delta"`
			}
			if err := json.Unmarshal(e.data, &d); err != nil || d.Delta.Type != "input_json_delta" {
				t.Fatalf("delta %s", e.data)
			}
			args.WriteString(d.Delta.PartialJSON)
		}
		if args.String() != ToolArguments {
			t.Fatalf("arguments %q", args.String())
		}
		if !bytes.Contains(evs[len(evs)-2].data, []byte(`"stop_reason":"tool_use"`)) {
			t.Fatalf("message_delta %s", evs[len(evs)-2].data)
		}
	})
}

func TestAnthropicErrorStatuses(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindAnthropic})
	cases := []struct {
		directive  string
		status     int
		typ        string
		message    string
		retryAfter string
	}{
		{"status=400", 400, "invalid_request_error", "status=400", ""},
		{"status=401", 401, "authentication_error", "invalid x-api-key", ""},
		{"status=403", 403, "permission_error", "permission", ""},
		{"status=404", 404, "not_found_error", "model: claude-sonnet-4-20250514", ""},
		{"status=429", 429, "rate_limit_error", "rate limit", "1"},
		{"status=429 retry_after=7", 429, "rate_limit_error", "try again in 7s", "7"},
		{"status=500", 500, "api_error", "Internal server error", ""},
		{"status=529", 529, "overloaded_error", "Overloaded", ""},
		{"status=529 retry_after=3", 529, "overloaded_error", "Overloaded", "3"},
		{"status=503", 503, "api_error", "status=503", ""},
		{"status=418", 418, "invalid_request_error", "status=418", ""},
		{"chunks=lots", 400, "invalid_request_error", "invalid directive", ""},
	}
	for _, tc := range cases {
		t.Run(tc.directive, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				resp := postAnthropic(t, base, anthropicBody("x #mock "+tc.directive, map[string]any{"stream": stream}))
				if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Fatalf("retry-after %q, want %q", got, tc.retryAfter)
				}
				checkAnthropicError(t, resp, tc.status, tc.typ, tc.message)
			}
		})
	}
	t.Run("model", func(t *testing.T) {
		body := anthropicBody("x", nil)
		body["model"] = "mock-error-529"
		checkAnthropicError(t, postAnthropic(t, base, body), 529, "overloaded_error", "Overloaded")
	})
	t.Run("fail_first", func(t *testing.T) {
		var got []int
		for range 3 {
			resp := postAnthropic(t, base, anthropicBody("x #mock fail_first=2 status=529 id=anthropic", nil))
			readAll(t, resp)
			got = append(got, resp.StatusCode)
		}
		if !slices.Equal(got, []int{529, 529, 200}) {
			t.Fatalf("statuses %v", got)
		}
	})
	if n := len(s.Requests()); n != 2*len(cases)+4 {
		t.Fatalf("recorded %d", n)
	}
}

func TestAnthropicValidation(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	noMax := anthropicBody("x", nil)
	delete(noMax, "max_tokens")
	noModel := anthropicBody("x", nil)
	delete(noModel, "model")
	systemRole := anthropicBody("x", nil)
	systemRole["messages"] = []map[string]any{{"role": "system", "content": "x"}, {"role": "user", "content": "y"}}
	cases := []struct {
		name    string
		method  string
		path    string
		body    any
		hdr     map[string]string
		status  int
		typ     string
		message string
	}{
		{"no version", "POST", "/v1/messages", anthropicBody("x", nil), nil, 400, "invalid_request_error", "anthropic-version"},
		{"no max_tokens", "POST", "/v1/messages", noMax, anthropicHeaders, 400, "invalid_request_error", "max_tokens: Field required"},
		{"no model", "POST", "/v1/messages", noModel, anthropicHeaders, 400, "invalid_request_error", "model: Field required"},
		{"no messages", "POST", "/v1/messages", `{"model":"m","max_tokens":5}`, anthropicHeaders, 400, "invalid_request_error", "messages: Field required"},
		{"empty messages", "POST", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[]}`, anthropicHeaders, 400, "invalid_request_error", "at least one message"},
		{"max_tokens type", "POST", "/v1/messages", `{"model":"m","max_tokens":"5","messages":[{"role":"user","content":"x"}]}`, anthropicHeaders, 400, "invalid_request_error", "max_tokens: Input should be a valid integer"},
		{"system role", "POST", "/v1/messages", systemRole, anthropicHeaders, 400, "invalid_request_error", `Unexpected role "system"`},
		{"bad json", "POST", "/v1/messages", "{nope", anthropicHeaders, 400, "invalid_request_error", "valid JSON"},
		{"unknown path", "POST", "/v1/complete", "{}", anthropicHeaders, 404, "not_found_error", "Not Found"},
		{"wrong method", "GET", "/v1/messages", nil, anthropicHeaders, 405, "invalid_request_error", "Method Not Allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkAnthropicError(t, doJSON(t, context.Background(), tc.method, base+tc.path, tc.body, tc.hdr), tc.status, tc.typ, tc.message)
		})
	}
}

func TestAnthropicCutAfter(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	t.Run("stream", func(t *testing.T) {
		resp := postAnthropic(t, base, anthropicBody("x #mock cut_after=3 chunks=10", map[string]any{"stream": true}))
		defer resp.Body.Close()
		evs, err := readSSE(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
		if got, want := eventNames(evs), anthropicOrder(3); !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
	})
	t.Run("stream after all chunks", func(t *testing.T) {
		resp := postAnthropic(t, base, anthropicBody("x #mock cut_after=2 chunks=2", map[string]any{"stream": true}))
		defer resp.Body.Close()
		evs, err := readSSE(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || slices.Contains(eventNames(evs), "message_stop") {
			t.Fatalf("events %q, err %v", eventNames(evs), err)
		}
	})
	t.Run("plain", func(t *testing.T) {
		resp := postAnthropic(t, base, anthropicBody("x #mock cut_after=0", nil))
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want unexpected EOF, got %v", err)
		}
	})
}

func TestAnthropicErrorAfter(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	for _, tc := range []struct {
		directive string
		deltas    int
	}{{"error_after=2 chunks=10", 2}, {"error_after=0", 0}, {"error_after=5 chunks=3", 3}, {"error_after=1 tool_call=get_weather", 1}} {
		t.Run(tc.directive, func(t *testing.T) {
			evs := streamAnthropic(t, base, anthropicBody("x #mock "+tc.directive, map[string]any{"tools": anthropicTools}))
			if got, want := eventNames(evs), anthropicOrder(tc.deltas, "error"); !slices.Equal(got, want) {
				t.Fatalf("events %q, want %q", got, want)
			}
			if string(evs[len(evs)-1].data) != `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` {
				t.Fatalf("error event %s", evs[len(evs)-1].data)
			}
		})
	}
}

func TestAnthropicAuth(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic, APIKey: "sk-ant-secret-123456"})
	body := anthropicBody("x", nil)
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"anthropic-version": "2023-06-01"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	post := func(hdr map[string]string) *http.Response {
		return doJSON(t, context.Background(), http.MethodPost, base+"/v1/messages", body, hdr)
	}
	checkAnthropicError(t, post(with(nil)), 401, "authentication_error", "x-api-key header is required")
	checkAnthropicError(t, post(with(map[string]string{"x-api-key": "sk-ant-wrong"})), 401, "authentication_error", "invalid x-api-key")
	checkAnthropicError(t, post(with(map[string]string{"Authorization": "Bearer sk-ant-secret-123456"})), 401, "authentication_error", "x-api-key")
	resp := post(with(map[string]string{"x-api-key": "sk-ant-secret-123456"}))
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("with key: %d", resp.StatusCode)
	}
	checkAnthropicError(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1/models", nil, nil), 401, "authentication_error", "x-api-key")
}

func TestAnthropicModels(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	resp := doJSON(t, context.Background(), http.MethodGet, base+"/v1/models", nil, nil)
	b := readAll(t, resp)
	if got := jsonKeys(t, b); got != "data,first_id,has_more,last_id" {
		t.Fatalf("keys %s", got)
	}
	var list struct {
		Data []struct {
			Type        string `json:"type"`
			ID          string `json:"id"`
			DisplayName string `json:"display_name"`
			CreatedAt   string `json:"created_at"`
		} `json:"data"`
		HasMore bool   `json:"has_more"`
		FirstID string `json:"first_id"`
		LastID  string `json:"last_id"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) < 2 || list.HasMore || list.FirstID != list.Data[0].ID || list.LastID != list.Data[len(list.Data)-1].ID {
		t.Fatalf("list %s", b)
	}
	for _, m := range list.Data {
		if _, err := time.Parse(time.RFC3339, m.CreatedAt); err != nil || m.Type != "model" || m.DisplayName == "" {
			t.Fatalf("model %+v", m)
		}
	}
	var one struct{ ID, Type string }
	decodeBody(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1/models/"+list.Data[0].ID, nil, nil), &one)
	if one.ID != list.Data[0].ID || one.Type != "model" {
		t.Fatalf("model %+v", one)
	}
	checkAnthropicError(t, doJSON(t, context.Background(), http.MethodGet, base+"/v1/models/nope", nil, nil), 404, "not_found_error", "nope")
}

func TestAnthropicCancelMidStream(t *testing.T) {
	s, base := startServer(t, Config{Kind: KindAnthropic})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := doJSON(t, ctx, http.MethodPost, base+"/v1/messages",
		anthropicBody("x #mock chunks=200 chunk_delay_ms=20", map[string]any{"stream": true}), anthropicHeaders)
	rd := sse.NewReader(resp.Body)
	for deltas := 0; deltas < 3; {
		ev, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name == "content_block_delta" {
			deltas++
		}
	}
	cancelAt := time.Now()
	cancel()
	resp.Body.Close()
	select {
	case o := <-s.Canceled():
		if o.Path != "/v1/messages" || o.Canceled.Before(cancelAt) || o.Done.IsZero() {
			t.Fatalf("observed %+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancellation observed")
	}
}

func TestAnthropicSilence(t *testing.T) {
	_, base := startServer(t, Config{Kind: KindAnthropic})
	resp := postAnthropic(t, base, anthropicBody("x #mock silent_ms=150 chunks=2", map[string]any{"stream": true}))
	defer resp.Body.Close()
	rd := sse.NewReader(resp.Body)
	var pingAt time.Time
	for {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if ev.Name == "ping" {
			pingAt = time.Now()
		}
		if ev.Name == "content_block_delta" {
			if d := time.Since(pingAt); d < 140*time.Millisecond {
				t.Fatalf("first delta %v after ping", d)
			}
			return
		}
	}
}

func BenchmarkAnthropicStream(b *testing.B) {
	benchServe(b, Config{Kind: KindAnthropic}, "/v1/messages", `{"model":"claude-sonnet-4-20250514","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hello there"}]}`, anthropicHeaders)
}

// benchServe measures one kind's handler on an in-memory recorder.
func benchServe(b *testing.B, cfg Config, path, body string, hdr map[string]string) {
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(body)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, path, bytes.NewReader(raw))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := &discardWriter{h: http.Header{}}
		s.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing but the status, so
// benchmarks measure the mock rather than a recorder's buffer.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Flush()                      {}

func TestNewAcceptsEveryKind(t *testing.T) {
	for _, k := range []string{KindOpenAI, KindAnthropic, KindGemini, KindOllama, KindAzure, KindBedrock, KindVertex} {
		if _, err := New(Config{Kind: k}); err != nil {
			t.Fatalf("New(%q): %v", k, err)
		}
	}
	_, err := New(Config{Kind: "watsonx"})
	if err == nil || !strings.Contains(err.Error(), "anthropic") || !strings.Contains(err.Error(), "bedrock") {
		t.Fatalf("unknown kind: %v", err)
	}
}
