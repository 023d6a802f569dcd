package providermock

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// systemFingerprint is sent where OpenAI sends one.
const systemFingerprint = "fp_mock0000000"

const (
	maxN          = 128
	defaultDims   = 8
	maxDims       = 8192
	modelsCreated = 1715367049
)

// modelIDs are the models GET /v1/models lists.
var modelIDs = []string{
	"gpt-4o-mini",
	"gpt-4o",
	"gpt-3.5-turbo-instruct",
	"text-embedding-3-small",
	"mock-large",
}

var modelsBody = func() []byte {
	b := []byte(`{"object":"list","data":[`)
	for i, id := range modelIDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, id)
	}
	return append(b, "]}"...)
}()

func appendModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, modelsCreated, 10)
	return append(b, `,"owned_by":"mock"}`...)
}

// serveOpenAI routes a request of kind openai.
func (s *Server) serveOpenAI(rq *request) {
	path := rq.r.URL.Path
	var method string
	var handle func(*request)
	switch path {
	case "/v1/chat/completions":
		method, handle = http.MethodPost, s.openAIChat
	case "/v1/completions":
		method, handle = http.MethodPost, s.openAICompletion
	case "/v1/embeddings":
		method, handle = http.MethodPost, s.openAIEmbeddings
	case "/v1/responses":
		method, handle = http.MethodPost, s.openAIResponses
	case "/v1/models":
		method, handle = http.MethodGet, s.openAIModels
	default:
		if id, ok := strings.CutPrefix(path, "/v1/models/"); ok && id != "" {
			method, handle = http.MethodGet, func(rq *request) { s.openAIModel(rq, id) }
		}
	}
	if handle == nil {
		rq.writeError(http.StatusNotFound, "Invalid URL ("+rq.r.Method+" "+path+")", "invalid_request_error", "", "")
		return
	}
	if rq.r.Method != method {
		rq.w.Header()["Allow"] = []string{method}
		rq.writeError(http.StatusMethodNotAllowed, "Method "+rq.r.Method+" not allowed for "+path+"; use "+method+".", "invalid_request_error", "", "")
		return
	}
	if !rq.checkAuth() {
		return
	}
	if rq.bodyErr != nil {
		if errors.Is(rq.bodyErr, errBodyTooLarge) {
			rq.writeError(http.StatusRequestEntityTooLarge, "The request body is too large.", "invalid_request_error", "", "")
		} else {
			rq.cancel()
		}
		return
	}
	handle(rq)
}

// checkAuth enforces Config.APIKey; it answers 401 and reports false when
// the request lacks the key.
func (rq *request) checkAuth() bool {
	want := rq.s.cfg.APIKey
	if want == "" || rq.s.cfg.Kind == KindAzure { // azure: checked by azureAuth
		return true
	}
	auth := rq.r.Header.Get("Authorization")
	got, ok := strings.CutPrefix(auth, "Bearer ")
	got = strings.TrimSpace(got)
	if !ok || got == "" {
		rq.writeError(http.StatusUnauthorized,
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
			"invalid_request_error", "", "")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		rq.writeError(http.StatusUnauthorized, "Incorrect API key provided: "+maskKey(got)+".", "invalid_request_error", "", "invalid_api_key")
		return false
	}
	return true
}

// maskKey hides all of a key but its ends, as OpenAI's messages do.
func maskKey(k string) string {
	if len(k) <= 8 {
		return strings.Repeat("*", len(k))
	}
	return k[:3] + strings.Repeat("*", min(len(k)-7, 24)) + k[len(k)-4:]
}

// writeError sends an error in OpenAI's shape; empty param or code are null.
func (rq *request) writeError(status int, message, typ, param, code string) {
	b := rq.buffer()
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":`...)
	b = appendNullableString(b, param)
	b = append(b, `,"code":`...)
	b = appendNullableString(b, code)
	b = append(b, "}}"...)
	rq.keep(b)
	rq.writeJSON(status, b)
}

func (rq *request) badRequest(message, param string) {
	rq.writeError(http.StatusBadRequest, message, "invalid_request_error", param, "")
}

// decode unmarshals the request body into v; on failure it answers 400.
func (rq *request) decode(v any) bool {
	if err := json.Unmarshal(rq.body, v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			rq.badRequest(fmt.Sprintf("Invalid type for '%s': expected %s, but got %s.", ute.Field, ute.Type, ute.Value), ute.Field)
			return false
		}
		rq.badRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", "")
		return false
	}
	return true
}

// proceed applies latency and injected errors; it reports whether the
// handler should answer normally.
func (rq *request) proceed(d *directives, model string) bool {
	status := rq.s.failStatus(d)
	if !rq.wait(d.latency) {
		return false
	}
	if status != 0 {
		rq.writeStatusError(status, d, model)
		return false
	}
	return true
}

// writeStatusError sends the error a status directive asks for, with
// OpenAI's messages, types and codes.
func (rq *request) writeStatusError(status int, d *directives, model string) {
	h := rq.w.Header()
	retry := d.retryAfter
	if status == http.StatusTooManyRequests && retry < 0 {
		retry = 1
	}
	if retry >= 0 {
		h["Retry-After"] = []string{strconv.Itoa(retry)}
	}
	switch status {
	case http.StatusBadRequest:
		rq.writeError(status, "Invalid request (mock directive status=400).", "invalid_request_error", "", "")
	case http.StatusUnauthorized:
		rq.writeError(status, "Incorrect API key provided: sk-mock***************0000.", "invalid_request_error", "", "invalid_api_key")
	case http.StatusForbidden:
		rq.writeError(status, "You are not allowed to sample from this model", "invalid_request_error", "", "")
	case http.StatusNotFound:
		rq.writeError(status, "The model `"+model+"` does not exist or you do not have access to it.", "invalid_request_error", "", "model_not_found")
	case http.StatusTooManyRequests:
		h["X-Ratelimit-Limit-Requests"] = hdrRateLimit
		h["X-Ratelimit-Remaining-Requests"] = hdrZero
		h["X-Ratelimit-Reset-Requests"] = []string{strconv.Itoa(retry) + "s"}
		if model == "" {
			model = "this model"
		}
		rq.writeError(status, "Rate limit reached for "+model+" in organization org-mock on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in "+strconv.Itoa(retry)+"s.", "requests", "", "rate_limit_exceeded")
	case http.StatusInternalServerError:
		rq.writeError(status, "The server had an error while processing your request. Sorry about that!", "server_error", "", "")
	case http.StatusServiceUnavailable:
		rq.writeError(status, "The server is overloaded or not ready yet.", "server_error", "", "")
	default:
		typ := "invalid_request_error"
		if status >= 500 {
			typ = "server_error"
		}
		rq.writeError(status, "Mock error (status="+strconv.Itoa(status)+").", typ, "", "")
	}
}

// ---- chat completions ----

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   int            `json:"n"`
	MaxTokens           int            `json:"max_tokens"`
	MaxCompletionTokens int            `json:"max_completion_tokens"`
	Tools               []chatTool     `json:"tools"`
	ToolChoice          toolChoice     `json:"tool_choice"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string      `json:"role"`
	Content textContent `json:"content"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name string `json:"name"`
	} `json:"function"`
}

// textContent is a message's content: a string, null, or an array of
// parts whose text parts are joined with spaces.
type textContent string

func (c *textContent) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case '"':
		if s, ok := plainJSONString(b); ok {
			*c = textContent(s)
			return nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = textContent(s)
	case '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Text == "" {
				continue
			}
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(p.Text)
		}
		*c = textContent(sb.String())
	case 'n':
		*c = ""
	default:
		return errors.New("content must be a string, an array of parts or null")
	}
	return nil
}

// plainJSONString decodes a JSON string literal without escapes cheaply.
func plainJSONString(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	for _, c := range inner {
		if c == '\\' || c == '"' || c < 0x20 || c >= utf8.RuneSelf {
			return "", false
		}
	}
	return string(inner), true
}

// toolChoice is "none", "auto", "required" or {"type":"function","function":{"name":...}}.
type toolChoice struct {
	Mode string
	Name string
}

func (t *toolChoice) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] == 'n' {
		return nil
	}
	if b[0] == '"' {
		return json.Unmarshal(b, &t.Mode)
	}
	var v struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	t.Mode = v.Type
	t.Name = v.Function.Name
	return nil
}

// toolName picks the function to call, or "" for a text answer.
func (req *chatRequest) toolName(d *directives) string {
	if len(req.Tools) == 0 || req.ToolChoice.Mode == "none" {
		return ""
	}
	if d.toolCall != "" {
		return d.toolCall
	}
	if req.ToolChoice.Name != "" {
		return req.ToolChoice.Name
	}
	if req.ToolChoice.Mode == "required" {
		return req.Tools[0].Function.Name
	}
	return ""
}

// answerSize caps chunks by the request's token limit.
func answerSize(chunks, limit int) (int, string) {
	if limit > 0 && limit < chunks {
		return limit, "length"
	}
	return chunks, "stop"
}

func (s *Server) openAIChat(rq *request) {
	var req chatRequest
	if !rq.decode(&req) {
		return
	}
	if req.Model == "" {
		rq.badRequest("you must provide a model parameter", "")
		return
	}
	if len(req.Messages) == 0 {
		rq.badRequest("[] is too short - 'messages'", "messages")
		return
	}
	n := req.N
	if n == 0 {
		n = 1
	}
	if n < 1 || n > maxN {
		rq.badRequest(fmt.Sprintf("%d is not a valid value for 'n': it must be from 1 to %d.", req.N, maxN), "n")
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	promptTokens := 0
	last := -1
	for i := range req.Messages {
		promptTokens += countWords(string(req.Messages[i].Content))
		if req.Messages[i].Role == "user" {
			last = i
		}
	}
	promptTokens = max(promptTokens, 1)
	if last >= 0 {
		if err := d.parse(string(req.Messages[last].Content)); err != nil {
			rq.badRequest(err.Error(), "messages")
			return
		}
	}
	if !rq.proceed(&d, req.Model) {
		return
	}
	limit := req.MaxCompletionTokens
	if req.MaxTokens > 0 && (limit <= 0 || req.MaxTokens < limit) {
		limit = req.MaxTokens
	}
	chunks, finish := answerSize(d.chunks, limit)
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	a := answer{
		id:           s.newID("chatcmpl-"),
		created:      time.Now().Unix(),
		model:        req.Model,
		n:            n,
		chunks:       chunks,
		finish:       finish,
		promptTokens: promptTokens,
		tool:         req.toolName(&d),
		includeUsage: includeUsage,
	}
	if a.tool != "" {
		a.toolID = s.newID("call_")
		a.finish = "tool_calls"
		a.chunks = len(toolFragments)
	}
	if req.Stream {
		rq.streamChat(&a, &d)
		return
	}
	b := rq.buffer()
	b = a.appendChat(b)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// answer is what a completion request is answered with.
type answer struct {
	id, model    string
	created      int64
	n, chunks    int
	finish       string
	promptTokens int
	tool, toolID string
	includeUsage bool
}

func (a *answer) completionTokens() int { return a.chunks * a.n }

func (a *answer) appendUsage(b []byte) []byte {
	c := a.completionTokens()
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(a.promptTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(c), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(a.promptTokens+c), 10)
	return append(b, '}')
}

// appendHead appends `{"id":...,"object":OBJ,"created":...,"model":...`.
func (a *answer) appendHead(b []byte, object string) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, a.id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, a.created, 10)
	b = append(b, `,"model":`...)
	return appendJSONString(b, a.model)
}

func (a *answer) appendToolCall(b []byte, streamed bool) []byte {
	if streamed {
		b = append(b, `{"index":0,"id":"`...)
	} else {
		b = append(b, `{"id":"`...)
	}
	b = append(b, a.toolID...)
	b = append(b, `","type":"function","function":{"name":`...)
	b = appendJSONString(b, a.tool)
	b = append(b, `,"arguments":`...)
	if streamed {
		b = append(b, `""`...)
	} else {
		b = appendJSONString(b, ToolArguments)
	}
	return append(b, "}}"...)
}

func (a *answer) appendChat(b []byte) []byte {
	b = a.appendHead(b, "chat.completion")
	b = append(b, `,"choices":[`...)
	for i := range a.n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"message":{"role":"assistant","content":`...)
		if a.tool != "" {
			b = append(b, `null,"tool_calls":[`...)
			b = a.appendToolCall(b, false)
			b = append(b, ']')
		} else {
			b = append(b, '"')
			for k := range a.chunks {
				b = append(b, piece(k)...)
			}
			b = append(b, '"')
		}
		b = append(b, `,"refusal":null},"logprobs":null,"finish_reason":"`...)
		b = append(b, a.finish...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"usage":`...)
	b = a.appendUsage(b)
	b = append(b, `,"system_fingerprint":"`+systemFingerprint+`"}`...)
	return b
}

// streamer writes the events of one stream, sharing the JSON head of
// every chunk.
type streamer struct {
	rq     *request
	d      *directives
	prefix []byte // "data: {...,\"choices\":["
	suffix string // "]}\n\n" or "],\"usage\":null}\n\n"
	buf    []byte
	sent   int // events sent
}

func newStreamer(rq *request, d *directives, a *answer, object string) *streamer {
	st := &streamer{rq: rq, d: d, buf: rq.buffer()}
	p := make([]byte, 0, 160+len(a.model))
	p = append(p, "data: "...)
	p = a.appendHead(p, object)
	p = append(p, `,"system_fingerprint":"`+systemFingerprint+`","choices":[`...)
	st.prefix = p
	st.suffix = "]}\n\n"
	if a.includeUsage {
		st.suffix = `],"usage":null}` + "\n\n"
	}
	return st
}

// event sends prefix+choice+suffix after the chunk delay (none before the
// first event); it reports whether to go on.
func (st *streamer) event(choice func([]byte) []byte) bool {
	if st.sent > 0 && !st.rq.wait(st.d.chunkDelay) {
		return false
	}
	b := append(st.buf[:0], st.prefix...)
	b = choice(b)
	b = append(b, st.suffix...)
	st.buf = b
	st.sent++
	return st.rq.send(b)
}

// raw sends a complete event with no delay.
func (st *streamer) raw(build func([]byte) []byte) bool {
	b := build(st.buf[:0])
	st.buf = b
	st.sent++
	return st.rq.send(b)
}

func (st *streamer) done() {
	st.rq.keep(st.buf)
	st.raw(func(b []byte) []byte { return append(b, "data: [DONE]\n\n"...) })
}

func (st *streamer) usage(a *answer) bool {
	return st.raw(func(b []byte) []byte {
		b = append(b, st.prefix...)
		b = append(b, `],"usage":`...)
		b = a.appendUsage(b)
		return append(b, "}\n\n"...)
	})
}

func appendChoiceStart(b []byte, i int) []byte {
	b = append(b, `{"index":`...)
	return strconv.AppendInt(b, int64(i), 10)
}

func (rq *request) streamChat(a *answer, d *directives) {
	rq.startStream()
	st := newStreamer(rq, d, a, "chat.completion.chunk")
	defer func() { rq.keep(st.buf) }()
	for i := range a.n {
		ok := st.event(func(b []byte) []byte {
			b = appendChoiceStart(b, i)
			if a.tool != "" {
				b = append(b, `,"delta":{"role":"assistant","content":null,"tool_calls":[`...)
				b = a.appendToolCall(b, true)
				b = append(b, "]}"...)
			} else {
				b = append(b, `,"delta":{"role":"assistant","content":""}`...)
			}
			return append(b, `,"logprobs":null,"finish_reason":null}`...)
		})
		if !ok {
			return
		}
	}
	if d.silent > 0 && !rq.wait(d.silent) {
		return
	}
	for k := 0; k < a.chunks; k++ {
		if k == d.cutAfter {
			rq.keep(st.buf)
			rq.abort()
		}
		for i := range a.n {
			ok := st.event(func(b []byte) []byte {
				b = appendChoiceStart(b, i)
				if a.tool != "" {
					b = append(b, `,"delta":{"tool_calls":[{"index":0,"function":{"arguments":`...)
					b = appendJSONString(b, toolFragments[k])
					b = append(b, "}}]}"...)
				} else {
					b = append(b, `,"delta":{"content":"`...)
					b = append(b, piece(k)...)
					b = append(b, `"}`...)
				}
				return append(b, `,"logprobs":null,"finish_reason":null}`...)
			})
			if !ok {
				return
			}
		}
	}
	if d.cutAfter >= a.chunks {
		rq.keep(st.buf)
		rq.abort()
	}
	for i := range a.n {
		ok := st.event(func(b []byte) []byte {
			b = appendChoiceStart(b, i)
			b = append(b, `,"delta":{},"logprobs":null,"finish_reason":"`...)
			b = append(b, a.finish...)
			return append(b, `"}`...)
		})
		if !ok {
			return
		}
	}
	if a.includeUsage && !st.usage(a) {
		return
	}
	st.done()
}

// ---- legacy completions ----

type completionRequest struct {
	Model         string         `json:"model"`
	Prompt        promptInput    `json:"prompt"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	N             int            `json:"n"`
	MaxTokens     int            `json:"max_tokens"`
}

// promptInput is a prompt or embeddings input: a string, an array of
// strings, an array of token ids, or an array of token id arrays.
type promptInput struct {
	items []inputItem
}

type inputItem struct {
	text   string // the text, or the token array's JSON
	tokens int    // words or tokens
	isText bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	p.items = p.items[:0]
	if len(b) == 0 || b[0] == 'n' {
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p.items = append(p.items, inputItem{text: s, tokens: countWords(s), isText: true})
		return nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(b, &elems); err != nil {
		return errors.New("input must be a string, an array of strings or an array of tokens")
	}
	if len(elems) == 0 {
		return errors.New("input must not be empty")
	}
	switch elems[0][0] {
	case '"':
		for _, e := range elems {
			var s string
			if err := json.Unmarshal(e, &s); err != nil {
				return errors.New("input array must hold only strings")
			}
			p.items = append(p.items, inputItem{text: s, tokens: countWords(s), isText: true})
		}
	case '[':
		for _, e := range elems {
			var toks []int
			if err := json.Unmarshal(e, &toks); err != nil {
				return errors.New("input array must hold only token arrays")
			}
			p.items = append(p.items, inputItem{text: string(e), tokens: len(toks)})
		}
	default:
		var toks []int
		if err := json.Unmarshal(b, &toks); err != nil {
			return errors.New("input array must hold only strings or token ids")
		}
		p.items = append(p.items, inputItem{text: string(b), tokens: len(toks)})
	}
	return nil
}

func (p *promptInput) tokens() int {
	n := 0
	for _, it := range p.items {
		n += it.tokens
	}
	return max(n, 1)
}

// directiveText is the text of the first item, where directives are read.
func (p *promptInput) directiveText() string {
	if len(p.items) > 0 && p.items[0].isText {
		return p.items[0].text
	}
	return ""
}

func (s *Server) openAICompletion(rq *request) {
	var req completionRequest
	if !rq.decode(&req) {
		return
	}
	if req.Model == "" {
		rq.badRequest("you must provide a model parameter", "")
		return
	}
	n := req.N
	if n == 0 {
		n = 1
	}
	if n < 1 || n > maxN {
		rq.badRequest(fmt.Sprintf("%d is not a valid value for 'n': it must be from 1 to %d.", req.N, maxN), "n")
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	if err := d.parse(req.Prompt.directiveText()); err != nil {
		rq.badRequest(err.Error(), "prompt")
		return
	}
	if !rq.proceed(&d, req.Model) {
		return
	}
	chunks, finish := answerSize(d.chunks, req.MaxTokens)
	a := answer{
		id:           s.newID("cmpl-"),
		created:      time.Now().Unix(),
		model:        req.Model,
		n:            n,
		chunks:       chunks,
		finish:       finish,
		promptTokens: req.Prompt.tokens(),
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	}
	if req.Stream {
		rq.streamCompletion(&a, &d)
		return
	}
	b := rq.buffer()
	b = a.appendHead(b, "text_completion")
	b = append(b, `,"choices":[`...)
	for i := range a.n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"text":"`...)
		for k := range a.chunks {
			b = append(b, piece(k)...)
		}
		b = append(b, `","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"logprobs":null,"finish_reason":"`...)
		b = append(b, a.finish...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"usage":`...)
	b = a.appendUsage(b)
	b = append(b, `,"system_fingerprint":"`+systemFingerprint+`"}`...)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

func (rq *request) streamCompletion(a *answer, d *directives) {
	rq.startStream()
	st := newStreamer(rq, d, a, "text_completion")
	defer func() { rq.keep(st.buf) }()
	for k := 0; k < a.chunks; k++ {
		if k == d.cutAfter {
			rq.keep(st.buf)
			rq.abort()
		}
		for i := range a.n {
			ok := st.event(func(b []byte) []byte {
				b = append(b, `{"text":"`...)
				b = append(b, piece(k)...)
				b = append(b, `","index":`...)
				b = strconv.AppendInt(b, int64(i), 10)
				return append(b, `,"logprobs":null,"finish_reason":null}`...)
			})
			if !ok {
				return
			}
		}
		if k == 0 && d.silent > 0 && !rq.wait(d.silent) {
			return
		}
	}
	if d.cutAfter >= a.chunks {
		rq.keep(st.buf)
		rq.abort()
	}
	for i := range a.n {
		ok := st.event(func(b []byte) []byte {
			b = append(b, `{"text":"","index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, `,"logprobs":null,"finish_reason":"`...)
			b = append(b, a.finish...)
			return append(b, `"}`...)
		})
		if !ok {
			return
		}
	}
	if a.includeUsage && !st.usage(a) {
		return
	}
	st.done()
}

// ---- embeddings ----

type embeddingsRequest struct {
	Model          string      `json:"model"`
	Input          promptInput `json:"input"`
	Dimensions     int         `json:"dimensions"`
	EncodingFormat string      `json:"encoding_format"`
}

func (s *Server) openAIEmbeddings(rq *request) {
	var req embeddingsRequest
	if !rq.decode(&req) {
		return
	}
	if req.Model == "" {
		rq.badRequest("you must provide a model parameter", "")
		return
	}
	if len(req.Input.items) == 0 {
		rq.badRequest("'input' is a required property", "input")
		return
	}
	dims := req.Dimensions
	if dims == 0 {
		dims = defaultDims
	}
	if dims < 1 || dims > maxDims {
		rq.badRequest(fmt.Sprintf("Invalid value for 'dimensions': %d; it must be from 1 to %d.", req.Dimensions, maxDims), "dimensions")
		return
	}
	b64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		rq.badRequest(fmt.Sprintf("Invalid value for 'encoding_format': %q; supported values are 'float' and 'base64'.", req.EncodingFormat), "encoding_format")
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	if err := d.parse(req.Input.directiveText()); err != nil {
		rq.badRequest(err.Error(), "input")
		return
	}
	if !rq.proceed(&d, req.Model) {
		return
	}
	vec := make([]float32, dims)
	var raw []byte
	if b64 {
		raw = make([]byte, 0, 4*dims)
	}
	b := rq.buffer()
	b = append(b, `{"object":"list","data":[`...)
	for i, it := range req.Input.items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		Embedding(vec, it.text)
		if b64 {
			raw = raw[:0]
			for _, v := range vec {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, v := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, req.Model)
	p := req.Input.tokens()
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, "}}"...)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// Embedding fills vec with the deterministic unit vector the mock returns
// for text (for token inputs, text is the token array's JSON as sent).
func Embedding(vec []float32, text string) {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(text); i++ {
		h ^= uint64(text[i])
		h *= 1099511628211
	}
	var norm float64
	for j := range vec {
		x := splitmix64(h + uint64(j)*0x9e3779b97f4a7c15)
		v := float64(x>>11)/float64(1<<53)*2 - 1
		vec[j] = float32(v)
		norm += v * v
	}
	if norm == 0 {
		return
	}
	inv := 1 / math.Sqrt(norm)
	for j := range vec {
		vec[j] = float32(float64(vec[j]) * inv)
	}
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ---- models ----

func (s *Server) openAIModels(rq *request) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	rq.writeJSON(http.StatusOK, modelsBody)
}

func (s *Server) openAIModel(rq *request, id string) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	for _, m := range modelIDs {
		if m == id {
			b := appendModel(rq.buffer(), id)
			rq.keep(b)
			rq.writeJSON(http.StatusOK, b)
			return
		}
	}
	rq.writeError(http.StatusNotFound, "The model `"+id+"` does not exist or you do not have access to it.", "invalid_request_error", "", "model_not_found")
}

// ---- JSON helpers ----

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal; invalid UTF-8
// becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}

func appendNullableString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendJSONString(dst, s)
}
