package providermock

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind "ollama" speaks Ollama's native API:
//
//	POST /api/chat       NDJSON stream of messages (the default: "stream" absent or
//	                     true), or one JSON object with "stream":false
//	POST /api/generate   the same for a prompt ("response" instead of "message")
//	POST /api/embed      {"embeddings":[[...]]}, the same vectors as OpenAI's embeddings
//	GET  /api/tags       fixed model list
//	GET  /api/version    {"version":...}
//	GET  /               "Ollama is running"
//	     /v1/...         Ollama's OpenAI-compatible API: answered as kind openai
//
// There is no auth unless Config.APIKey is set; then a Bearer token is
// required, as a proxy in front of Ollama would. Directives are read from
// the last user message (or the prompt, or the first embed input). Errors
// are {"error":"..."} with the status; error_after=N writes one as an NDJSON
// line after N chunks and ends the stream, as Ollama does when the runner
// fails mid-answer. A tool call is one message carrying tool_calls (the
// arguments as an object), then the final line; done_reason is "stop" for
// it, as Ollama says.

const (
	ollamaVersion = "0.12.6"
	// ollamaLoadNs is the load_duration reported: the model is always warm.
	ollamaLoadNs = 1_000_000
	// ollamaPromptEvalNs is the prompt_eval_duration reported per prompt token.
	ollamaPromptEvalNs = 50_000
)

var hdrNDJSON = []string{"application/x-ndjson"}

var ollamaModels = []struct{ name, family, params, quant string }{
	{"llama3.2:latest", "llama", "3.2B", "Q4_K_M"},
	{"qwen2.5:7b", "qwen2", "7.6B", "Q4_K_M"},
	{"all-minilm:latest", "bert", "23M", "F16"},
	{"mock-large:latest", "llama", "70B", "Q4_K_M"},
}

var ollamaTagsBody = func() []byte {
	b := []byte(`{"models":[`)
	for i, m := range ollamaModels {
		if i > 0 {
			b = append(b, ',')
		}
		sum := sha256.Sum256([]byte(m.name))
		b = append(b, `{"name":`...)
		b = appendJSONString(b, m.name)
		b = append(b, `,"model":`...)
		b = appendJSONString(b, m.name)
		b = append(b, `,"modified_at":"2025-01-01T00:00:00Z","size":`...)
		b = strconv.AppendInt(b, int64(1_000_000_000+i*123_456_789), 10)
		b = append(b, `,"digest":"`...)
		b = hex.AppendEncode(b, sum[:])
		b = append(b, `","details":{"parent_model":"","format":"gguf","family":`...)
		b = appendJSONString(b, m.family)
		b = append(b, `,"families":[`...)
		b = appendJSONString(b, m.family)
		b = append(b, `],"parameter_size":`...)
		b = appendJSONString(b, m.params)
		b = append(b, `,"quantization_level":`...)
		b = appendJSONString(b, m.quant)
		b = append(b, "}}"...)
	}
	return append(b, "]}"...)
}()

var ollamaVersionBody = []byte(`{"version":"` + ollamaVersion + `"}`)

// serveOllama routes a request of kind ollama.
func (s *Server) serveOllama(rq *request) {
	path := rq.r.URL.Path
	if strings.HasPrefix(path, "/v1/") {
		s.serveOpenAI(rq)
		return
	}
	var method string
	var handle func(*request)
	switch path {
	case "/api/chat":
		method, handle = http.MethodPost, s.ollamaChat
	case "/api/generate":
		method, handle = http.MethodPost, s.ollamaGenerate
	case "/api/embed":
		method, handle = http.MethodPost, s.ollamaEmbed
	case "/api/tags":
		method, handle = http.MethodGet, func(rq *request) { s.ollamaStatic(rq, ollamaTagsBody) }
	case "/api/version":
		method, handle = http.MethodGet, func(rq *request) { s.ollamaStatic(rq, ollamaVersionBody) }
	case "/":
		if rq.r.Method == http.MethodHead {
			method = http.MethodHead
		} else {
			method = http.MethodGet
		}
		handle = func(rq *request) { rq.writeText(http.StatusOK, "Ollama is running") }
	}
	if handle == nil {
		rq.writeText(http.StatusNotFound, "404 page not found")
		return
	}
	if rq.r.Method != method {
		rq.w.Header()["Allow"] = []string{method}
		rq.writeText(http.StatusMethodNotAllowed, "405 method not allowed")
		return
	}
	if !rq.ollamaAuth() {
		return
	}
	if rq.bodyErr != nil {
		if errors.Is(rq.bodyErr, errBodyTooLarge) {
			rq.ollamaError(http.StatusRequestEntityTooLarge, "request body too large")
		} else {
			rq.cancel()
		}
		return
	}
	handle(rq)
}

// writeText sends a plain-text body, as Ollama's router does for unknown
// paths.
func (rq *request) writeText(status int, text string) {
	h := rq.w.Header()
	rq.setCommonHeaders(h)
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(text))}
	rq.w.WriteHeader(status)
	if rq.r.Method == http.MethodHead {
		return
	}
	if _, err := rq.w.Write([]byte(text)); err != nil {
		rq.cancel()
	}
}

// ollamaAuth enforces Config.APIKey as a Bearer token.
func (rq *request) ollamaAuth() bool {
	want := rq.s.cfg.APIKey
	if want == "" {
		return true
	}
	got, ok := strings.CutPrefix(rq.r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) != 1 {
		rq.ollamaError(http.StatusUnauthorized, "unauthorized")
		return false
	}
	return true
}

// appendOllamaError appends {"error":message}.
func appendOllamaError(b []byte, message string) []byte {
	b = append(b, `{"error":`...)
	b = appendJSONString(b, message)
	return append(b, '}')
}

func (rq *request) ollamaError(status int, message string) {
	b := appendOllamaError(rq.buffer(), message)
	rq.keep(b)
	rq.writeJSON(status, b)
}

// ollamaStatusError sends the error a status directive asks for, with
// Ollama's messages.
func (rq *request) ollamaStatusError(status int, d *directives, model string) {
	rq.setRetryAfter(d, status)
	var msg string
	switch status {
	case http.StatusBadRequest:
		msg = "invalid request (mock directive status=400)"
	case http.StatusUnauthorized:
		msg = "unauthorized"
	case http.StatusForbidden:
		msg = "forbidden"
	case http.StatusNotFound:
		msg = `model "` + model + `" not found, try pulling it first`
	case http.StatusTooManyRequests:
		msg = "too many requests, please try again"
	case http.StatusInternalServerError:
		msg = "llama runner process has terminated: mock directive status=500"
	case http.StatusServiceUnavailable:
		msg = "server busy, please try again.  maximum pending requests exceeded"
	default:
		msg = "mock error (status=" + strconv.Itoa(status) + ")"
	}
	rq.ollamaError(status, msg)
}

// ollamaDecode unmarshals the body into v; on failure it answers 400 with
// the decoder's message, as Ollama does.
func (rq *request) ollamaDecode(v any) bool {
	if len(rq.body) == 0 {
		rq.ollamaError(http.StatusBadRequest, "missing request body")
		return false
	}
	if err := json.Unmarshal(rq.body, v); err != nil {
		rq.ollamaError(http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

type ollamaOptions struct {
	NumPredict int `json:"num_predict"`
}

type ollamaChatRequest struct {
	Model    string        `json:"model"`
	Messages []chatMessage `json:"messages"`
	Stream   *bool         `json:"stream"`
	Tools    []chatTool    `json:"tools"`
	Options  ollamaOptions `json:"options"`
}

type ollamaGenerateRequest struct {
	Model   string        `json:"model"`
	Prompt  string        `json:"prompt"`
	System  string        `json:"system"`
	Stream  *bool         `json:"stream"`
	Options ollamaOptions `json:"options"`
}

// streams reports whether the answer is NDJSON: Ollama streams unless told
// not to.
func streams(flag *bool) bool { return flag == nil || *flag }

func (s *Server) ollamaChat(rq *request) {
	var req ollamaChatRequest
	if !rq.ollamaDecode(&req) {
		return
	}
	if req.Model == "" {
		rq.ollamaError(http.StatusBadRequest, "model is required")
		return
	}
	a := s.newOllamaAnswer(rq, req.Model, `,"message":{"role":"assistant","content":`, "}")
	if len(req.Messages) == 0 {
		rq.ollamaLoaded(&a)
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	last := -1
	for i := range req.Messages {
		a.promptTokens += countWords(string(req.Messages[i].Content))
		if req.Messages[i].Role == "user" {
			last = i
		}
	}
	if last >= 0 {
		if err := d.parse(string(req.Messages[last].Content)); err != nil {
			rq.ollamaError(http.StatusBadRequest, err.Error())
			return
		}
	}
	if d.toolCall != "" {
		for _, t := range req.Tools {
			if t.Function.Name == d.toolCall {
				a.tool = d.toolCall
				break
			}
		}
	}
	s.ollamaAnswer(rq, &a, &d, req.Options.NumPredict, streams(req.Stream))
}

func (s *Server) ollamaGenerate(rq *request) {
	var req ollamaGenerateRequest
	if !rq.ollamaDecode(&req) {
		return
	}
	if req.Model == "" {
		rq.ollamaError(http.StatusBadRequest, "model is required")
		return
	}
	a := s.newOllamaAnswer(rq, req.Model, `,"response":`, "")
	if req.Prompt == "" {
		rq.ollamaLoaded(&a)
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	a.promptTokens = countWords(req.System) + countWords(req.Prompt)
	if err := d.parse(req.Prompt); err != nil {
		rq.ollamaError(http.StatusBadRequest, err.Error())
		return
	}
	s.ollamaAnswer(rq, &a, &d, req.Options.NumPredict, streams(req.Stream))
}

// ollamaAnswer is what a chat or generate request is answered with. Every
// line starts with head (model, created_at and the opening of the message
// or response field) and ends the field with tail.
type ollamaAnswer struct {
	model        string
	head, tail   string
	start        time.Time
	chunks       int
	done         string
	promptTokens int
	tool         string
}

func (s *Server) newOllamaAnswer(rq *request, model, field, tail string) ollamaAnswer {
	h := make([]byte, 0, 96+len(model))
	h = append(h, `{"model":`...)
	h = appendJSONString(h, model)
	h = append(h, `,"created_at":"`...)
	h = time.Now().UTC().AppendFormat(h, time.RFC3339Nano)
	h = append(h, '"')
	h = append(h, field...)
	return ollamaAnswer{model: model, head: string(h), tail: tail, start: rq.obs.Start}
}

// ollamaLoaded answers a request without messages or prompt, which only
// loads the model.
func (rq *request) ollamaLoaded(a *ollamaAnswer) {
	b := append(rq.buffer(), a.head...)
	b = append(b, `""`...)
	b = append(b, a.tail...)
	b = append(b, `,"done_reason":"load","done":true}`...)
	rq.keep(b)
	rq.writeJSON(http.StatusOK, b)
}

// ollamaAnswer applies the directives and writes the answer.
func (s *Server) ollamaAnswer(rq *request, a *ollamaAnswer, d *directives, numPredict int, stream bool) {
	if !rq.admit(d, func(status int) { rq.ollamaStatusError(status, d, a.model) }) {
		return
	}
	a.promptTokens = max(a.promptTokens, 1)
	a.chunks, a.done = d.chunks, "stop"
	if numPredict > 0 && numPredict < a.chunks {
		a.chunks, a.done = numPredict, "length"
	}
	if a.tool != "" {
		a.chunks, a.done = len(toolFragments), "stop"
	}
	if stream {
		rq.ollamaStream(a, d)
		return
	}
	b := append(rq.buffer(), a.head...)
	if a.tool != "" {
		b = a.appendToolCall(b)
	} else {
		b = append(b, '"')
		for k := range a.chunks {
			b = append(b, piece(k)...)
		}
		b = append(b, '"')
	}
	b = append(b, a.tail...)
	b = a.appendDone(b)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// appendToolCall appends the content and tool_calls of a tool call message.
func (a *ollamaAnswer) appendToolCall(b []byte) []byte {
	b = append(b, `"","tool_calls":[{"function":{"name":`...)
	b = appendJSONString(b, a.tool)
	return append(b, `,"arguments":`+ToolArguments+`}}]`...)
}

// appendDone appends the end of the final object: done_reason, done and
// the timings (nanoseconds; the mock's own elapsed time plus a fixed load
// and a per-token prompt evaluation).
func (a *ollamaAnswer) appendDone(b []byte) []byte {
	eval := max(time.Since(a.start).Nanoseconds(), 1)
	promptEval := int64(a.promptTokens) * ollamaPromptEvalNs
	b = append(b, `,"done_reason":"`...)
	b = append(b, a.done...)
	b = append(b, `","done":true,"total_duration":`...)
	b = strconv.AppendInt(b, ollamaLoadNs+promptEval+eval, 10)
	b = append(b, `,"load_duration":`...)
	b = strconv.AppendInt(b, ollamaLoadNs, 10)
	b = append(b, `,"prompt_eval_count":`...)
	b = strconv.AppendInt(b, int64(a.promptTokens), 10)
	b = append(b, `,"prompt_eval_duration":`...)
	b = strconv.AppendInt(b, promptEval, 10)
	b = append(b, `,"eval_count":`...)
	b = strconv.AppendInt(b, int64(a.chunks), 10)
	b = append(b, `,"eval_duration":`...)
	b = strconv.AppendInt(b, eval, 10)
	return append(b, '}')
}

// ollamaStream writes the NDJSON lines of one answer: one per chunk (one
// for a tool call), then the final done line.
func (rq *request) ollamaStream(a *ollamaAnswer, d *directives) {
	rq.startStreamAs(hdrNDJSON)
	b := rq.buffer()
	defer func() { rq.keep(b) }()
	lines := a.chunks
	if a.tool != "" {
		lines = 1
	}
	fail := func() {
		b = appendOllamaError(b[:0], "an error was encountered while running the model: mock directive error_after="+strconv.Itoa(d.errorAfter))
		rq.send(append(b, '\n'))
	}
	for k := 0; k < lines; k++ {
		if k == d.cutAfter {
			rq.abort()
		}
		if k == d.errorAfter {
			fail()
			return
		}
		if k > 0 && !rq.wait(d.chunkDelay) {
			return
		}
		b = append(b[:0], a.head...)
		if a.tool != "" {
			b = a.appendToolCall(b)
		} else {
			b = append(b, '"')
			b = append(b, piece(k)...)
			b = append(b, '"')
		}
		b = append(b, a.tail...)
		b = append(b, ",\"done\":false}\n"...)
		if !rq.send(b) {
			return
		}
		if k == 0 && d.silent > 0 && !rq.wait(d.silent) {
			return
		}
	}
	if d.cutAfter >= lines {
		rq.abort()
	}
	if d.errorAfter >= lines {
		fail()
		return
	}
	if lines > 0 && !rq.wait(d.chunkDelay) {
		return
	}
	b = append(b[:0], a.head...)
	b = append(b, `""`...)
	b = append(b, a.tail...)
	b = a.appendDone(b)
	rq.send(append(b, '\n'))
}

// ---- embeddings ----

type ollamaEmbedRequest struct {
	Model      string      `json:"model"`
	Input      promptInput `json:"input"`
	Dimensions int         `json:"dimensions"`
}

func (s *Server) ollamaEmbed(rq *request) {
	var req ollamaEmbedRequest
	if !rq.ollamaDecode(&req) {
		return
	}
	if req.Model == "" {
		rq.ollamaError(http.StatusBadRequest, "model is required")
		return
	}
	dims := req.Dimensions
	if dims == 0 {
		dims = defaultDims
	}
	if dims < 1 || dims > maxDims {
		rq.ollamaError(http.StatusBadRequest, "dimensions must be from 1 to "+strconv.Itoa(maxDims))
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	if err := d.parse(req.Input.directiveText()); err != nil {
		rq.ollamaError(http.StatusBadRequest, err.Error())
		return
	}
	if !rq.admit(&d, func(status int) { rq.ollamaStatusError(status, &d, req.Model) }) {
		return
	}
	vec := make([]float32, dims)
	b := rq.buffer()
	b = append(b, `{"model":`...)
	b = appendJSONString(b, req.Model)
	b = append(b, `,"embeddings":[`...)
	for i, it := range req.Input.items {
		if i > 0 {
			b = append(b, ',')
		}
		Embedding(vec, it.text)
		b = appendFloats(b, vec)
	}
	tokens := 0
	for _, it := range req.Input.items {
		tokens += it.tokens
	}
	elapsed := max(time.Since(rq.obs.Start).Nanoseconds(), 1)
	b = append(b, `],"total_duration":`...)
	b = strconv.AppendInt(b, ollamaLoadNs+elapsed, 10)
	b = append(b, `,"load_duration":`...)
	b = strconv.AppendInt(b, ollamaLoadNs, 10)
	b = append(b, `,"prompt_eval_count":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, '}')
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// ---- static ----

func (s *Server) ollamaStatic(rq *request, body []byte) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	rq.writeJSON(http.StatusOK, body)
}
