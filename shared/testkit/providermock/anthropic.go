package providermock

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// Kind "anthropic" speaks Anthropic's Messages API:
//
//	POST /v1/messages      a message, or its SSE stream (named events)
//	GET  /v1/models        fixed model list, Anthropic's paged shape
//	GET  /v1/models/{id}   one model, or 404
//
// Requests carry the key in x-api-key (when Config.APIKey is set) and
// /v1/messages needs an anthropic-version header (any value) and
// max_tokens, as the real API does. Directives are read from the text of
// the last user message (a string or its text blocks; tool_result blocks
// carry none). A stream is message_start, content_block_start, ping, one
// content_block_delta per chunk, content_block_stop, message_delta and
// message_stop. A tool call is the only content block (as with a forced
// tool_choice), its input streamed as input_json_delta fragments.
// error_after=N sends an "error" event with overloaded_error after N deltas
// and ends the stream, as Anthropic does when it is overloaded mid-answer.

const (
	anthropicCacheZero = `"cache_creation_input_tokens":0,"cache_read_input_tokens":0,`
	anthropicPing      = "event: ping\ndata: {\"type\":\"ping\"}\n\n"
	anthropicOverload  = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
	anthropicStop      = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

// anthropicModels are the models GET /v1/models lists, newest first as
// Anthropic lists them.
var anthropicModels = []struct{ id, name, created string }{
	{"claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"},
	{"claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"},
	{"mock-large", "Mock Large", "2024-05-10T00:00:00Z"},
}

var anthropicModelsBody = func() []byte {
	b := []byte(`{"data":[`)
	for i := range anthropicModels {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAnthropicModel(b, i)
	}
	b = append(b, `],"has_more":false,"first_id":`...)
	b = appendJSONString(b, anthropicModels[0].id)
	b = append(b, `,"last_id":`...)
	b = appendJSONString(b, anthropicModels[len(anthropicModels)-1].id)
	return append(b, '}')
}()

func appendAnthropicModel(b []byte, i int) []byte {
	m := anthropicModels[i]
	b = append(b, `{"type":"model","id":`...)
	b = appendJSONString(b, m.id)
	b = append(b, `,"display_name":`...)
	b = appendJSONString(b, m.name)
	b = append(b, `,"created_at":"`...)
	b = append(b, m.created...)
	return append(b, `"}`...)
}

// serveAnthropic routes a request of kind anthropic.
func (s *Server) serveAnthropic(rq *request) {
	path := rq.r.URL.Path
	var method string
	var handle func(*request)
	switch path {
	case "/v1/messages":
		method, handle = http.MethodPost, s.anthropicMessages
	case "/v1/messages/count_tokens":
		method, handle = http.MethodPost, s.anthropicCountTokens
	case "/v1/models":
		method, handle = http.MethodGet, s.anthropicListModels
	default:
		if id, ok := strings.CutPrefix(path, "/v1/models/"); ok && id != "" {
			method, handle = http.MethodGet, func(rq *request) { s.anthropicModel(rq, id) }
		}
	}
	if handle == nil {
		rq.anthropicError(http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	if rq.r.Method != method {
		rq.w.Header()["Allow"] = []string{method}
		rq.anthropicError(http.StatusMethodNotAllowed, "invalid_request_error", "Method Not Allowed")
		return
	}
	if !rq.anthropicAuth() {
		return
	}
	if rq.bodyErr != nil {
		if errors.Is(rq.bodyErr, errBodyTooLarge) {
			rq.anthropicError(http.StatusRequestEntityTooLarge, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
		} else {
			rq.cancel()
		}
		return
	}
	handle(rq)
}

// anthropicAuth enforces Config.APIKey through the x-api-key header.
func (rq *request) anthropicAuth() bool {
	want := rq.s.cfg.APIKey
	if want == "" {
		return true
	}
	got := rq.r.Header.Get("X-Api-Key")
	if got == "" {
		rq.anthropicError(http.StatusUnauthorized, "authentication_error", "x-api-key header is required")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		rq.anthropicError(http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return false
	}
	return true
}

// anthropicError sends {"type":"error","error":{"type":...,"message":...}}.
func (rq *request) anthropicError(status int, typ, message string) {
	b := rq.buffer()
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, "}}"...)
	rq.keep(b)
	rq.writeJSON(status, b)
}

func (rq *request) anthropicBadRequest(message string) {
	rq.anthropicError(http.StatusBadRequest, "invalid_request_error", message)
}

// anthropicStatusError sends the error a status directive asks for, with
// Anthropic's types and messages.
func (rq *request) anthropicStatusError(status int, d *directives, model string) {
	ra := rq.setRetryAfter(d, status)
	switch status {
	case http.StatusBadRequest:
		rq.anthropicBadRequest("Invalid request (mock directive status=400).")
	case http.StatusUnauthorized:
		rq.anthropicError(status, "authentication_error", "invalid x-api-key")
	case http.StatusForbidden:
		rq.anthropicError(status, "permission_error", "Your API key does not have permission to use the specified resource.")
	case http.StatusNotFound:
		rq.anthropicError(status, "not_found_error", "model: "+model)
	case http.StatusRequestEntityTooLarge:
		rq.anthropicError(status, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
	case http.StatusTooManyRequests:
		h := rq.w.Header()
		h["Anthropic-Ratelimit-Requests-Limit"] = hdrRateLimit
		h["Anthropic-Ratelimit-Requests-Remaining"] = hdrZero
		rq.anthropicError(status, "rate_limit_error",
			"This request would exceed the rate limit for your organization (org-mock) of 60 requests per minute. Please try again in "+strconv.Itoa(ra)+"s.")
	case http.StatusInternalServerError:
		rq.anthropicError(status, "api_error", "Internal server error")
	case 529:
		rq.anthropicError(status, "overloaded_error", "Overloaded")
	default:
		typ := "invalid_request_error"
		if status >= 500 {
			typ = "api_error"
		}
		rq.anthropicError(status, typ, "Mock error (status="+strconv.Itoa(status)+").")
	}
}

type anthropicRequest struct {
	Model      string               `json:"model"`
	Messages   []chatMessage        `json:"messages"`
	System     textContent          `json:"system"`
	MaxTokens  *int                 `json:"max_tokens"`
	Stream     bool                 `json:"stream"`
	Tools      []anthropicTool      `json:"tools"`
	ToolChoice *anthropicToolChoice `json:"tool_choice"`
}

type anthropicTool struct {
	Name string `json:"name"`
}

// anthropicToolChoice is {"type":"auto"|"any"|"none"} or {"type":"tool","name":...}.
type anthropicToolChoice struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

func (req *anthropicRequest) hasTool(name string) bool {
	for _, t := range req.Tools {
		if t.Name == name {
			return true
		}
	}
	return false
}

// toolName picks the tool to call, or "" for a text answer. A tool the
// request does not declare is never called: Anthropic cannot do that.
func (req *anthropicRequest) toolName(d *directives) string {
	if len(req.Tools) == 0 {
		return ""
	}
	var choice anthropicToolChoice
	if req.ToolChoice != nil {
		choice = *req.ToolChoice
	}
	switch {
	case choice.Type == "none":
		return ""
	case d.toolCall != "" && req.hasTool(d.toolCall):
		return d.toolCall
	case choice.Type == "tool" && req.hasTool(choice.Name):
		return choice.Name
	case choice.Type == "any":
		return req.Tools[0].Name
	}
	return ""
}

// anthropicDecodeError words a body decoding failure as Anthropic does.
func anthropicDecodeError(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) && ute.Field != "" {
		want := "value"
		switch ute.Type.Kind() {
		case reflect.Int, reflect.Int64:
			want = "integer"
		case reflect.String:
			want = "string"
		case reflect.Bool:
			want = "boolean"
		case reflect.Slice:
			want = "list"
		case reflect.Struct, reflect.Map:
			want = "dictionary"
		}
		return ute.Field + ": Input should be a valid " + want
	}
	return "There was an error parsing the body of your request. Please ensure it is valid JSON."
}

// anthropicCountTokens serves /v1/messages/count_tokens: the prompt's
// words, as the messages endpoint counts them, plus
// CountTokensOverhead, so a test can tell this count from any other.
// Like Anthropic, it refuses max_tokens and stream, which only the
// messages endpoint takes.
func (s *Server) anthropicCountTokens(rq *request) {
	if rq.r.Header.Get("Anthropic-Version") == "" {
		rq.anthropicBadRequest("anthropic-version: header is required")
		return
	}
	var req struct {
		anthropicRequest
		Stream *bool `json:"stream"`
	}
	if err := json.Unmarshal(rq.body, &req); err != nil {
		rq.anthropicBadRequest(anthropicDecodeError(err))
		return
	}
	switch {
	case req.Model == "":
		rq.anthropicBadRequest("model: Field required")
		return
	case len(req.Messages) == 0:
		rq.anthropicBadRequest("messages: Field required")
		return
	case req.MaxTokens != nil:
		rq.anthropicBadRequest("max_tokens: Extra inputs are not permitted")
		return
	case req.Stream != nil:
		rq.anthropicBadRequest("stream: Extra inputs are not permitted")
		return
	}
	n := countWords(string(req.System)) + CountTokensOverhead
	for i := range req.Messages {
		n += countWords(string(req.Messages[i].Content))
	}
	b := rq.buffer()
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '}')
	rq.keep(b)
	rq.writeJSON(http.StatusOK, b)
}

// CountTokensOverhead is what the anthropic mock's count_tokens adds to
// the words it counts.
const CountTokensOverhead = 1000

func (s *Server) anthropicMessages(rq *request) {
	if rq.r.Header.Get("Anthropic-Version") == "" {
		rq.anthropicBadRequest("anthropic-version: header is required")
		return
	}
	var req anthropicRequest
	if err := json.Unmarshal(rq.body, &req); err != nil {
		rq.anthropicBadRequest(anthropicDecodeError(err))
		return
	}
	switch {
	case req.Model == "":
		rq.anthropicBadRequest("model: Field required")
		return
	case req.Messages == nil:
		rq.anthropicBadRequest("messages: Field required")
		return
	case len(req.Messages) == 0:
		rq.anthropicBadRequest("messages: at least one message is required")
		return
	case req.MaxTokens == nil:
		rq.anthropicBadRequest("max_tokens: Field required")
		return
	case *req.MaxTokens < 1:
		rq.anthropicBadRequest("max_tokens: Input should be greater than or equal to 1")
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	promptTokens := countWords(string(req.System))
	last := -1
	for i := range req.Messages {
		m := &req.Messages[i]
		switch m.Role {
		case "user":
			last = i
		case "assistant":
		case "system":
			rq.anthropicBadRequest(`messages: Unexpected role "system". The Messages API accepts a top-level ` + "`system`" + ` parameter, not "system" as an input message role.`)
			return
		default:
			rq.anthropicBadRequest("messages." + strconv.Itoa(i) + ".role: Input should be 'user' or 'assistant'")
			return
		}
		promptTokens += countWords(string(m.Content))
	}
	if last >= 0 {
		if err := d.parse(string(req.Messages[last].Content)); err != nil {
			rq.anthropicBadRequest(err.Error())
			return
		}
	}
	if !rq.admit(&d, func(status int) { rq.anthropicStatusError(status, &d, req.Model) }) {
		return
	}
	a := anthropicAnswer{
		id:           s.newID("msg_"),
		model:        req.Model,
		promptTokens: max(promptTokens, 1),
		tool:         req.toolName(&d),
	}
	a.chunks, a.stop = d.chunks, "end_turn"
	if *req.MaxTokens < a.chunks {
		a.chunks, a.stop = *req.MaxTokens, "max_tokens"
	}
	if a.tool != "" {
		a.toolID = s.newID("toolu_")
		a.chunks, a.stop = len(toolFragments), "tool_use"
	}
	if req.Stream {
		rq.anthropicStream(&a, &d)
		return
	}
	b := a.appendMessage(rq.buffer())
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// anthropicAnswer is what a Messages request is answered with. chunks is
// the number of text deltas, or of tool argument fragments for a tool call;
// it is also the output token count.
type anthropicAnswer struct {
	id, model    string
	chunks       int
	stop         string
	promptTokens int
	tool, toolID string
}

// appendHead appends the message object up to and including "content":[.
func (a *anthropicAnswer) appendHead(b []byte) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, a.id...)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendJSONString(b, a.model)
	return append(b, `,"content":[`...)
}

func (a *anthropicAnswer) appendUsage(b []byte, output int) []byte {
	b = append(b, `"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(a.promptTokens), 10)
	b = append(b, ","+anthropicCacheZero+`"output_tokens":`...)
	b = strconv.AppendInt(b, int64(output), 10)
	return append(b, '}')
}

// appendToolUse appends a tool_use block; input is its input JSON.
func (a *anthropicAnswer) appendToolUse(b []byte, input string) []byte {
	b = append(b, `{"type":"tool_use","id":"`...)
	b = append(b, a.toolID...)
	b = append(b, `","name":`...)
	b = appendJSONString(b, a.tool)
	b = append(b, `,"input":`...)
	b = append(b, input...)
	return append(b, '}')
}

func (a *anthropicAnswer) appendMessage(b []byte) []byte {
	b = a.appendHead(b)
	if a.tool != "" {
		b = a.appendToolUse(b, ToolArguments)
	} else {
		b = append(b, `{"type":"text","text":"`...)
		for k := range a.chunks {
			b = append(b, piece(k)...)
		}
		b = append(b, `"}`...)
	}
	b = append(b, `],"stop_reason":"`...)
	b = append(b, a.stop...)
	b = append(b, `","stop_sequence":null,`...)
	b = a.appendUsage(b, a.chunks)
	return append(b, '}')
}

// anthropicStream writes the named-event stream of one answer. The opening
// events (message_start, content_block_start, ping) go out in one write,
// as do the closing ones; chunk_delay_ms paces each delta and the close.
func (rq *request) anthropicStream(a *anthropicAnswer, d *directives) {
	rq.startStream()
	b := rq.buffer()
	defer func() { rq.keep(b) }()

	b = append(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"...)
	b = a.appendHead(b)
	b = append(b, `],"stop_reason":null,"stop_sequence":null,`...)
	b = a.appendUsage(b, 1)
	b = append(b, "}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"...)
	if a.tool != "" {
		b = a.appendToolUse(b, "{}")
	} else {
		b = append(b, `{"type":"text","text":""}`...)
	}
	b = append(b, "}\n\n"+anthropicPing...)
	if !rq.send(b) {
		return
	}
	if d.silent > 0 && !rq.wait(d.silent) {
		return
	}
	for k := 0; k < a.chunks; k++ {
		if k == d.cutAfter {
			rq.abort()
		}
		if k == d.errorAfter {
			rq.send(append(b[:0], anthropicOverload...))
			return
		}
		if !rq.wait(d.chunkDelay) {
			return
		}
		b = append(b[:0], "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"...)
		if a.tool != "" {
			b = append(b, `{"type":"input_json_delta","partial_json":`...)
			b = appendJSONString(b, toolFragments[k])
		} else {
			b = append(b, `{"type":"text_delta","text":"`...)
			b = append(b, piece(k)...)
			b = append(b, '"')
		}
		b = append(b, "}}\n\n"...)
		if !rq.send(b) {
			return
		}
	}
	if d.cutAfter >= a.chunks {
		rq.abort()
	}
	if d.errorAfter >= a.chunks {
		rq.send(append(b[:0], anthropicOverload...))
		return
	}
	if !rq.wait(d.chunkDelay) {
		return
	}
	b = append(b[:0], "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"+
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\""...)
	b = append(b, a.stop...)
	b = append(b, `","stop_sequence":null},"usage":{"output_tokens":`...)
	b = strconv.AppendInt(b, int64(a.chunks), 10)
	b = append(b, "}}\n\n"+anthropicStop...)
	rq.send(b)
}

// ---- models ----

func (s *Server) anthropicListModels(rq *request) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	rq.writeJSON(http.StatusOK, anthropicModelsBody)
}

func (s *Server) anthropicModel(rq *request, id string) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	for i, m := range anthropicModels {
		if m.id == id {
			b := appendAnthropicModel(rq.buffer(), i)
			rq.keep(b)
			rq.writeJSON(http.StatusOK, b)
			return
		}
	}
	rq.anthropicError(http.StatusNotFound, "not_found_error", "model: "+id)
}
