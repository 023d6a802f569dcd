package providermock

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Kind "gemini" speaks the Gemini API (v1beta, generateContent):
//
//	POST /v1beta/models/{model}:generateContent         one GenerateContentResponse
//	POST /v1beta/models/{model}:streamGenerateContent   ?alt=sse: an SSE stream of responses;
//	                                                    without alt: a JSON array of them
//	POST /v1beta/models/{model}:embedContent            {"embedding":{"values":[...]}}
//	POST /v1beta/models/{model}:batchEmbedContents      {"embeddings":[{"values":[...]}]}
//	GET  /v1beta/models                                 fixed model list
//	GET  /v1beta/models/{model}                         one model, or 404
//
// The key goes in x-goog-api-key or ?key= (when Config.APIKey is set); a
// missing key is 403 PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT,
// as Google answers. Field names are accepted in lowerCamel and snake_case
// and an unknown top-level field is rejected, as the real API does, so an
// adapter sending OpenAI fields fails here too. Directives are read from the
// text parts of the last user content. Each streamed event carries one
// chunk and a running usageMetadata; the last one carries finishReason; no
// end marker follows. A tool call is one functionCall part (finishReason
// STOP) in one event. error_after=N sends an error object (503 UNAVAILABLE)
// as an event after N chunks and ends the stream.

const (
	geminiUsageHead = `"usageMetadata":{"promptTokenCount":`
	geminiOverload  = `{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`
	// geminiEventEnd ends an SSE event: Google separates events with CRLFs.
	geminiEventEnd = "\r\n\r\n"
)

var geminiModels = []struct {
	id, name, methods string
	in, out           int
}{
	{"gemini-2.5-flash", "Gemini 2.5 Flash", `"generateContent"`, 1048576, 65536},
	{"gemini-2.0-flash", "Gemini 2.0 Flash", `"generateContent"`, 1048576, 8192},
	{"text-embedding-004", "Text Embedding 004", `"embedContent"`, 2048, 1},
	{"mock-large", "Mock Large", `"generateContent"`, 131072, 8192},
}

var geminiModelsBody = func() []byte {
	b := []byte(`{"models":[`)
	for i := range geminiModels {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendGeminiModel(b, i)
	}
	return append(b, "]}"...)
}()

func appendGeminiModel(b []byte, i int) []byte {
	m := geminiModels[i]
	b = append(b, `{"name":"models/`...)
	b = append(b, m.id...)
	b = append(b, `","version":"001","displayName":`...)
	b = appendJSONString(b, m.name)
	b = append(b, `,"inputTokenLimit":`...)
	b = strconv.AppendInt(b, int64(m.in), 10)
	b = append(b, `,"outputTokenLimit":`...)
	b = strconv.AppendInt(b, int64(m.out), 10)
	b = append(b, `,"supportedGenerationMethods":[`...)
	b = append(b, m.methods...)
	return append(b, "]}"...)
}

// serveGemini routes a request of kind gemini.
func (s *Server) serveGemini(rq *request) {
	path := rq.r.URL.Path
	var method string
	var handle func(*request)
	query, _ := url.ParseQuery(rq.r.URL.RawQuery)
	if path == "/v1beta/models" {
		method, handle = http.MethodGet, s.geminiListModels
	} else if rest, ok := strings.CutPrefix(path, "/v1beta/models/"); ok && rest != "" {
		model, action, hasAction := strings.Cut(rest, ":")
		switch {
		case !hasAction:
			method, handle = http.MethodGet, func(rq *request) { s.geminiModel(rq, model) }
		case model == "":
		case action == "generateContent":
			method, handle = http.MethodPost, func(rq *request) { s.geminiGenerate(rq, model, "") }
		case action == "streamGenerateContent":
			mode := "json"
			if query.Get("alt") == "sse" {
				mode = "sse"
			}
			method, handle = http.MethodPost, func(rq *request) { s.geminiGenerate(rq, model, mode) }
		case action == "embedContent":
			method, handle = http.MethodPost, func(rq *request) { s.geminiEmbed(rq, model, false) }
		case action == "batchEmbedContents":
			method, handle = http.MethodPost, func(rq *request) { s.geminiEmbed(rq, model, true) }
		}
	}
	if handle == nil {
		rq.geminiError(http.StatusNotFound, "NOT_FOUND", "Method not found: "+rq.r.Method+" "+path)
		return
	}
	if rq.r.Method != method {
		rq.w.Header()["Allow"] = []string{method}
		rq.geminiError(http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "Method "+rq.r.Method+" is not allowed for "+path+"; use "+method+".")
		return
	}
	if !rq.geminiAuth(query) {
		return
	}
	if rq.bodyErr != nil {
		if errors.Is(rq.bodyErr, errBodyTooLarge) {
			rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", "Request payload size exceeds the limit: "+strconv.Itoa(maxBodyBytes)+" bytes.")
		} else {
			rq.cancel()
		}
		return
	}
	handle(rq)
}

// geminiAuth enforces Config.APIKey through x-goog-api-key or ?key=.
func (rq *request) geminiAuth(query url.Values) bool {
	want := rq.s.cfg.APIKey
	if want == "" {
		return true
	}
	got := rq.r.Header.Get("X-Goog-Api-Key")
	if got == "" {
		got = query.Get("key")
	}
	if got == "" {
		rq.geminiError(http.StatusForbidden, "PERMISSION_DENIED",
			"Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
		return false
	}
	return true
}

// appendGeminiError appends {"error":{"code":N,"message":...,"status":...}};
// details, if not empty, is the JSON array of google.rpc details.
func appendGeminiError(b []byte, code int, status, message, details string) []byte {
	b = append(b, `{"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, '"')
	if details != "" {
		b = append(b, `,"details":`...)
		b = append(b, details...)
	}
	return append(b, "}}"...)
}

func (rq *request) geminiError(code int, status, message string) {
	rq.geminiErrorDetails(code, status, message, "")
}

func (rq *request) geminiErrorDetails(code int, status, message, details string) {
	b := appendGeminiError(rq.buffer(), code, status, message, details)
	rq.keep(b)
	rq.writeJSON(code, b)
}

func (rq *request) geminiBadRequest(message string) {
	rq.geminiError(http.StatusBadRequest, "INVALID_ARGUMENT", message)
}

// geminiStatusError sends the error a status directive asks for, with
// Google's canonical status names.
func (rq *request) geminiStatusError(code int, d *directives, model string) {
	ra := rq.setRetryAfter(d, code)
	switch code {
	case http.StatusBadRequest:
		rq.geminiBadRequest("Request contains an invalid argument.")
	case http.StatusUnauthorized:
		rq.geminiError(code, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
	case http.StatusForbidden:
		rq.geminiError(code, "PERMISSION_DENIED", "The caller does not have permission")
	case http.StatusNotFound:
		rq.geminiError(code, "NOT_FOUND", "models/"+model+" is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.")
	case http.StatusTooManyRequests:
		rq.geminiErrorDetails(code, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
			`[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"`+strconv.Itoa(ra)+`s"}]`)
	case http.StatusInternalServerError:
		rq.geminiError(code, "INTERNAL", "An internal error has occurred. Please retry or report it.")
	case http.StatusServiceUnavailable:
		rq.geminiError(code, "UNAVAILABLE", "The model is overloaded. Please try again later.")
	case http.StatusGatewayTimeout:
		rq.geminiError(code, "DEADLINE_EXCEEDED", "The request timed out. Please try again.")
	default:
		status := "INVALID_ARGUMENT"
		if code >= 500 {
			status = "INTERNAL"
		}
		rq.geminiError(code, status, "Mock error (status="+strconv.Itoa(code)+").")
	}
}

// geminiRequest is a GenerateContentRequest; the *Snake fields take the
// snake_case spellings Google also accepts.
type geminiRequest struct {
	Contents               []geminiContent         `json:"contents"`
	SystemInstruction      *geminiContent          `json:"systemInstruction"`
	SystemInstructionSnake *geminiContent          `json:"system_instruction"`
	Tools                  []geminiTool            `json:"tools"`
	ToolConfig             *geminiToolConfig       `json:"toolConfig"`
	ToolConfigSnake        *geminiToolConfig       `json:"tool_config"`
	GenerationConfig       *geminiGenerationConfig `json:"generationConfig"`
	GenerationConfigSnake  *geminiGenerationConfig `json:"generation_config"`
}

// geminiFields are the top-level fields of a GenerateContentRequest.
var geminiFields = map[string]bool{
	"model": true, "contents": true, "tools": true, "toolConfig": true, "tool_config": true,
	"safetySettings": true, "safety_settings": true, "systemInstruction": true, "system_instruction": true,
	"generationConfig": true, "generation_config": true, "cachedContent": true, "cached_content": true,
	"labels": true,
}

type geminiContent struct {
	Role  string       `json:"role"`
	Parts []geminiPart `json:"parts"`
}

type geminiPart struct {
	Text string `json:"text"`
}

// text joins the text parts with spaces.
func (c *geminiContent) text() string {
	if len(c.Parts) == 1 {
		return c.Parts[0].Text
	}
	var sb strings.Builder
	for _, p := range c.Parts {
		if p.Text == "" {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(p.Text)
	}
	return sb.String()
}

type geminiTool struct {
	FunctionDeclarations      []geminiFunction `json:"functionDeclarations"`
	FunctionDeclarationsSnake []geminiFunction `json:"function_declarations"`
}

type geminiFunction struct {
	Name string `json:"name"`
}

type geminiToolConfig struct {
	FunctionCallingConfig      *geminiCallingConfig `json:"functionCallingConfig"`
	FunctionCallingConfigSnake *geminiCallingConfig `json:"function_calling_config"`
}

type geminiCallingConfig struct {
	Mode                      string   `json:"mode"`
	AllowedFunctionNames      []string `json:"allowedFunctionNames"`
	AllowedFunctionNamesSnake []string `json:"allowed_function_names"`
}

type geminiGenerationConfig struct {
	MaxOutputTokens      int `json:"maxOutputTokens"`
	MaxOutputTokensSnake int `json:"max_output_tokens"`
}

func (req *geminiRequest) system() *geminiContent {
	if req.SystemInstruction != nil {
		return req.SystemInstruction
	}
	return req.SystemInstructionSnake
}

func (req *geminiRequest) maxOutputTokens() int {
	for _, g := range []*geminiGenerationConfig{req.GenerationConfig, req.GenerationConfigSnake} {
		if g == nil {
			continue
		}
		if g.MaxOutputTokens > 0 {
			return g.MaxOutputTokens
		}
		if g.MaxOutputTokensSnake > 0 {
			return g.MaxOutputTokensSnake
		}
	}
	return 0
}

func (req *geminiRequest) hasFunction(name string) bool {
	for i := range req.Tools {
		t := &req.Tools[i]
		for _, fs := range [][]geminiFunction{t.FunctionDeclarations, t.FunctionDeclarationsSnake} {
			for _, f := range fs {
				if f.Name == name {
					return true
				}
			}
		}
	}
	return false
}

func (req *geminiRequest) firstFunction() string {
	for i := range req.Tools {
		t := &req.Tools[i]
		if len(t.FunctionDeclarations) > 0 {
			return t.FunctionDeclarations[0].Name
		}
		if len(t.FunctionDeclarationsSnake) > 0 {
			return t.FunctionDeclarationsSnake[0].Name
		}
	}
	return ""
}

// toolName picks the function to call, or "" for a text answer, following
// functionCallingConfig: NONE never calls, ANY always does (the first
// allowed or declared function unless the directive names one).
func (req *geminiRequest) toolName(d *directives) string {
	var mode string
	var allowed []string
	tc := req.ToolConfig
	if tc == nil {
		tc = req.ToolConfigSnake
	}
	if tc != nil {
		fc := tc.FunctionCallingConfig
		if fc == nil {
			fc = tc.FunctionCallingConfigSnake
		}
		if fc != nil {
			mode, allowed = fc.Mode, fc.AllowedFunctionNames
			if allowed == nil {
				allowed = fc.AllowedFunctionNamesSnake
			}
		}
	}
	switch {
	case mode == "NONE":
		return ""
	case d.toolCall != "" && req.hasFunction(d.toolCall):
		return d.toolCall
	case mode == "ANY":
		for _, name := range allowed {
			if req.hasFunction(name) {
				return name
			}
		}
		return req.firstFunction()
	}
	return ""
}

// geminiDecodeError words a body decoding failure as Google does.
func geminiDecodeError(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) && ute.Field != "" {
		return "Invalid value at '" + ute.Field + "' (" + ute.Type.String() + "), " + ute.Value
	}
	return "Invalid JSON payload received. Unexpected token."
}

// geminiUnknownField returns the first top-level field, in the body's
// order, that a GenerateContentRequest lacks, or "".
func geminiUnknownField(body []byte) string {
	d := json.NewDecoder(bytes.NewReader(body))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return ""
		}
		if k, _ := t.(string); !geminiFields[k] {
			return k
		}
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// geminiGenerate answers generateContent (mode "") and
// streamGenerateContent (mode "sse" or "json").
func (s *Server) geminiGenerate(rq *request, model, mode string) {
	var req geminiRequest
	if err := json.Unmarshal(rq.body, &req); err != nil {
		rq.geminiBadRequest(geminiDecodeError(err))
		return
	}
	if f := geminiUnknownField(rq.body); f != "" {
		rq.geminiBadRequest(`Invalid JSON payload received. Unknown name "` + f + `": Cannot find field.`)
		return
	}
	if len(req.Contents) == 0 {
		rq.geminiBadRequest("* GenerateContentRequest.contents: contents is not specified\n")
		return
	}
	d := s.baseDirectives()
	d.applyModel(model)
	promptTokens := 0
	if sys := req.system(); sys != nil {
		promptTokens += countWords(sys.text())
	}
	last := -1
	for i := range req.Contents {
		c := &req.Contents[i]
		switch c.Role {
		case "", "user":
			last = i
		case "model", "function":
		default:
			rq.geminiBadRequest("Please use a valid role: user, model.")
			return
		}
		promptTokens += countWords(c.text())
	}
	if last >= 0 {
		if err := d.parse(req.Contents[last].text()); err != nil {
			rq.geminiBadRequest(err.Error())
			return
		}
	}
	if !rq.admit(&d, func(code int) { rq.geminiStatusError(code, &d, model) }) {
		return
	}
	a := geminiAnswer{
		model:        model,
		responseID:   s.newID(""),
		promptTokens: max(promptTokens, 1),
		tool:         req.toolName(&d),
	}
	a.chunks, a.finish = d.chunks, "STOP"
	if limit := req.maxOutputTokens(); limit > 0 && limit < a.chunks {
		a.chunks, a.finish = limit, "MAX_TOKENS"
	}
	if a.tool != "" {
		a.chunks, a.finish = len(toolFragments), "STOP"
	}
	if mode != "" {
		rq.geminiStream(&a, &d, mode == "sse")
		return
	}
	b := rq.buffer()
	b = a.appendResponse(b, 0, a.chunks, true)
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// geminiAnswer is what a generateContent request is answered with. chunks
// is the number of text pieces (streamed one per event) and the candidate
// token count; a tool call counts its argument fragments but goes out
// whole, in one part.
type geminiAnswer struct {
	model, responseID string
	chunks            int
	finish            string
	promptTokens      int
	tool              string
}

// appendResponse appends a GenerateContentResponse holding pieces
// [from, to) (or the tool call), with the finish reason when final;
// usageMetadata counts the pieces sent so far.
func (a *geminiAnswer) appendResponse(b []byte, from, to int, final bool) []byte {
	b = append(b, `{"candidates":[{"content":{"parts":[`...)
	if a.tool != "" {
		b = append(b, `{"functionCall":{"name":`...)
		b = appendJSONString(b, a.tool)
		b = append(b, `,"args":`+ToolArguments+`}}`...)
	} else {
		b = append(b, `{"text":"`...)
		for k := from; k < to; k++ {
			b = append(b, piece(k)...)
		}
		b = append(b, `"}`...)
	}
	b = append(b, `],"role":"model"}`...)
	if final {
		b = append(b, `,"finishReason":"`...)
		b = append(b, a.finish...)
		b = append(b, '"')
	}
	b = append(b, `,"index":0}],`+geminiUsageHead...)
	b = strconv.AppendInt(b, int64(a.promptTokens), 10)
	b = append(b, `,"candidatesTokenCount":`...)
	b = strconv.AppendInt(b, int64(to), 10)
	b = append(b, `,"totalTokenCount":`...)
	b = strconv.AppendInt(b, int64(a.promptTokens+to), 10)
	b = append(b, `},"modelVersion":`...)
	b = appendJSONString(b, a.model)
	b = append(b, `,"responseId":"`...)
	b = append(b, a.responseID...)
	return append(b, `"}`...)
}

// geminiStream writes the responses of one answer, one chunk each, as SSE
// events (sse) or as the elements of a JSON array sent piece by piece.
func (rq *request) geminiStream(a *geminiAnswer, d *directives, sse bool) {
	if sse {
		rq.startStream()
	} else {
		rq.startStreamAs(hdrJSON)
	}
	b := rq.buffer()
	defer func() { rq.keep(b) }()
	events := max(a.chunks, 1)
	if a.tool != "" {
		events = 1
	}
	// open starts an element: "data: " for SSE, "[" or ",\r\n" in an array.
	open := func(b []byte, k int) []byte {
		switch {
		case sse:
			return append(b, "data: "...)
		case k == 0:
			return append(b, '[')
		}
		return append(b, ",\r\n"...)
	}
	closeElem := func(b []byte) []byte {
		if sse {
			return append(b, geminiEventEnd...)
		}
		return append(b, '\n')
	}
	fail := func(k int) {
		b = closeElem(append(open(b[:0], k), geminiOverload...))
		if !sse {
			b = append(b, ']')
		}
		rq.send(b)
	}
	for k := 0; k < events; k++ {
		if k == d.cutAfter {
			rq.abort()
		}
		if k == d.errorAfter {
			fail(k)
			return
		}
		if k > 0 && !rq.wait(d.chunkDelay) {
			return
		}
		last := k == events-1
		b = open(b[:0], k)
		if a.tool != "" {
			b = a.appendResponse(b, 0, a.chunks, true)
		} else {
			b = a.appendResponse(b, k, min(k+1, a.chunks), last)
		}
		b = closeElem(b)
		if !rq.send(b) {
			return
		}
		if k == 0 && d.silent > 0 && !rq.wait(d.silent) {
			return
		}
	}
	if d.cutAfter >= events {
		rq.abort()
	}
	if d.errorAfter >= events {
		fail(events)
		return
	}
	if !sse {
		rq.send(append(b[:0], ']'))
	}
}

// ---- embeddings ----

type geminiEmbedRequest struct {
	Content                   geminiContent `json:"content"`
	OutputDimensionality      int           `json:"outputDimensionality"`
	OutputDimensionalitySnake int           `json:"output_dimensionality"`
}

func (e *geminiEmbedRequest) dims() int {
	if e.OutputDimensionality != 0 {
		return e.OutputDimensionality
	}
	return e.OutputDimensionalitySnake
}

// geminiEmbed answers embedContent and batchEmbedContents with the same
// vectors as OpenAI's embeddings for the same text.
func (s *Server) geminiEmbed(rq *request, model string, batch bool) {
	var reqs []geminiEmbedRequest
	if batch {
		var br struct {
			Requests []geminiEmbedRequest `json:"requests"`
		}
		if err := json.Unmarshal(rq.body, &br); err != nil {
			rq.geminiBadRequest(geminiDecodeError(err))
			return
		}
		reqs = br.Requests
	} else {
		var one geminiEmbedRequest
		if err := json.Unmarshal(rq.body, &one); err != nil {
			rq.geminiBadRequest(geminiDecodeError(err))
			return
		}
		reqs = []geminiEmbedRequest{one}
	}
	if len(reqs) == 0 {
		rq.geminiBadRequest("* BatchEmbedContentsRequest.requests: requests is not specified\n")
		return
	}
	for i := range reqs {
		if len(reqs[i].Content.Parts) == 0 {
			rq.geminiBadRequest("* EmbedContentRequest.content: contents is not specified\n")
			return
		}
		if n := reqs[i].dims(); n < 0 || n > maxDims {
			rq.geminiBadRequest("* EmbedContentRequest.output_dimensionality: must be from 1 to " + strconv.Itoa(maxDims) + "\n")
			return
		}
	}
	d := s.baseDirectives()
	d.applyModel(model)
	if err := d.parse(reqs[0].Content.text()); err != nil {
		rq.geminiBadRequest(err.Error())
		return
	}
	if !rq.admit(&d, func(code int) { rq.geminiStatusError(code, &d, model) }) {
		return
	}
	b := rq.buffer()
	if batch {
		b = append(b, `{"embeddings":[`...)
	} else {
		b = append(b, `{"embedding":`...)
	}
	var vec []float32
	for i := range reqs {
		if i > 0 {
			b = append(b, ',')
		}
		dims := reqs[i].dims()
		if dims == 0 {
			dims = defaultDims
		}
		if cap(vec) < dims {
			vec = make([]float32, dims)
		}
		vec = vec[:dims]
		Embedding(vec, reqs[i].Content.text())
		b = append(b, `{"values":`...)
		b = appendFloats(b, vec)
		b = append(b, '}')
	}
	if batch {
		b = append(b, ']')
	}
	b = append(b, '}')
	rq.keep(b)
	if d.cutAfter >= 0 {
		rq.writeJSONCut(b)
		return
	}
	rq.writeJSON(http.StatusOK, b)
}

// appendFloats appends vec as a JSON array, formatted as OpenAI's
// embeddings are.
func appendFloats(b []byte, vec []float32) []byte {
	b = append(b, '[')
	for j, v := range vec {
		if j > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
	}
	return append(b, ']')
}

// ---- models ----

func (s *Server) geminiListModels(rq *request) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	rq.writeJSON(http.StatusOK, geminiModelsBody)
}

func (s *Server) geminiModel(rq *request, id string) {
	if !rq.wait(s.cfg.Latency) {
		return
	}
	for i, m := range geminiModels {
		if m.id == id {
			b := appendGeminiModel(rq.buffer(), i)
			rq.keep(b)
			rq.writeJSON(http.StatusOK, b)
			return
		}
	}
	rq.geminiError(http.StatusNotFound, "NOT_FOUND", "models/"+id+" is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.")
}
