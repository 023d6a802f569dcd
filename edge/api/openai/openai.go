// Package openai is the edge's OpenAI-compatible API surface:
// /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models.
//
// It decodes requests into the canonical llm.Request, hands them to the
// gateway and writes the answer exactly as OpenAI would: JSON bodies,
// server-sent event streams ending in "data: [DONE]", and errors in
// OpenAI's {"error":{...}} shape. A stream that breaks after its first
// byte ends with an error event and no [DONE], never as a quiet, truncated
// success.
package openai

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Surface serves the OpenAI-compatible API.
type Surface struct {
	cfg api.Config
}

// New returns a Surface.
func New(cfg api.Config) *Surface {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Surface{cfg: cfg}
}

// Register adds the surface's routes to mux. Methods are checked by the
// handlers, so a wrong method gets a 405 in OpenAI's format. The model
// list (Models, Model) is shared with the Anthropic surface, so the
// caller routes /v1/models by client format.
func (s *Surface) Register(mux *http.ServeMux) {
	mux.Handle("/v1/chat/completions", s.post(DecodeChat))
	mux.Handle("/v1/completions", s.post(DecodeCompletion))
	mux.Handle("/v1/embeddings", s.post(DecodeEmbedding))
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, llm.Errorf(http.StatusNotFound, llm.TypeInvalidRequest, "", "Unknown request URL: %s %s.", r.Method, r.URL.Path))
	})
}

// WriteError writes e in OpenAI's error shape.
func WriteError(w http.ResponseWriter, e *llm.Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.WriteHeader(e.Status)
	w.Write(errorBody(e))
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAITypes renames canonical error types OpenAI calls otherwise.
var openAITypes = map[string]string{
	llm.TypeAuthentication: "invalid_request_error",
	llm.TypeNotFound:       "invalid_request_error",
}

func errorBody(e *llm.Error) []byte {
	typ := e.Type
	if t, ok := openAITypes[typ]; ok {
		typ = t
	}
	if e.Code == "insufficient_quota" {
		typ = "insufficient_quota" // OpenAI's type and code for exhausted quota
	}
	o := errorObject{Message: e.Message, Type: typ}
	if e.Param != "" {
		o.Param = &e.Param
	}
	if e.Code != "" {
		o.Code = &e.Code
	}
	b, _ := json.Marshal(struct {
		Error errorObject `json:"error"`
	}{o})
	return b
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	WriteError(w, llm.Errorf(http.StatusMethodNotAllowed, llm.TypeInvalidRequest, "",
		"Method %s is not allowed for %s; use %s.", r.Method, r.URL.Path, allow))
}

// format is OpenAI's side of the request pipeline (api.Format).
type format struct{}

var _ api.Format = format{}

func (format) WriteError(w http.ResponseWriter, _ *http.Request, e *llm.Error) { WriteError(w, e) }

func (format) KeepAlive() []byte { return keepAliveEvent }

// RateLimitHeaders sets OpenAI's x-ratelimit-* headers: the limit, what
// remains of it and the time until it resets fully ("17ms", "60s"). The
// values share one string, so the headers cost two allocations.
func (format) RateLimitHeaders(h http.Header, v *limits.Verdict, _ time.Time) {
	var b [128]byte
	buf, ends := b[:0], [6]int{}
	names := [6]string{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests",
		"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"}
	for i, st := range [2]*limits.State{&v.Requests, &v.TokenState} {
		if !st.Has {
			ends[3*i], ends[3*i+1], ends[3*i+2] = len(buf), len(buf), len(buf)
			continue
		}
		buf = strconv.AppendInt(buf, st.Limit, 10)
		ends[3*i] = len(buf)
		buf = strconv.AppendInt(buf, st.Remaining, 10)
		ends[3*i+1] = len(buf)
		buf = appendReset(buf, st.Reset)
		ends[3*i+2] = len(buf)
	}
	all := string(buf)
	vals := make([]string, 6)
	start := 0
	for i, end := range ends {
		if end > start {
			vals[i] = all[start:end]
			h[names[i]] = vals[i : i+1 : i+1]
		}
		start = end
	}
}

// appendReset renders d as OpenAI does for a reset: milliseconds under a
// second, else whole seconds rounded up, in Go's duration syntax.
func appendReset(b []byte, d time.Duration) []byte {
	if d < time.Second {
		return append(strconv.AppendInt(b, max(d.Milliseconds(), 0), 10), "ms"...)
	}
	return append(strconv.AppendInt(b, int64((d+time.Second-1)/time.Second), 10), 's')
}

// Encode returns an OpenAI-compatible upstream's body as it came, and
// renders a translating adapter's answer.
func (format) Encode(_ *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Body != nil || resp.Completion == nil {
		return resp.Body, resp.Usage, nil
	}
	b, err := json.Marshal(resp.Completion)
	return b, resp.Usage, err
}

func (format) Stream(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	return &streamEncoder{includeUsage: req.IncludeUsage}
}

var _ api.CacheFormat = format{}

// EncodeCached returns a cached completion with its usage marked as
// read from the cache: prompt_tokens_details.cached_tokens is the whole
// prompt. The rest of the body is the original's.
func (format) EncodeCached(_ *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Format != "" && resp.Format != llm.FormatOpenAI {
		return nil, llm.Usage{}, fmt.Errorf("a cached %s answer cannot be rendered in OpenAI's format", resp.Format)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(resp.Body, &obj); err != nil {
		return nil, llm.Usage{}, err
	}
	obj["usage"] = appendCachedUsage(nil, resp.Usage)
	b, err := json.Marshal(obj)
	return b, resp.Usage, err
}

// appendCachedUsage renders u as OpenAI's usage object for an answer
// whose whole prompt was read from the cache.
func appendCachedUsage(b []byte, u llm.Usage) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens+u.CompletionTokens), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	return append(b, `}}`...)
}

// StreamCached replays a cached stream; its usage chunk, sent only to a
// client that asked for usage, marks the prompt as cached.
func (format) StreamCached(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	return &streamEncoder{includeUsage: req.IncludeUsage, cached: true}
}

// streamEncoder writes chunks as "data:" events: an OpenAI-compatible
// upstream's chunk JSON as it came, a translating adapter's rendered.
type streamEncoder struct{ includeUsage, cached bool }

func (e *streamEncoder) Chunk(b []byte, c *llm.Chunk) ([]byte, error) {
	if c.Raw == nil && len(c.Choices) == 0 && c.Usage != nil {
		switch {
		case !e.includeUsage:
			return b, nil // a translating adapter's usage chunk, which this client did not ask for
		case e.cached:
			return appendCachedUsageChunk(b, c), nil
		}
	}
	b = append(b, "data: "...)
	b = c.AppendJSON(b)
	return append(b, '\n', '\n'), nil
}

// appendCachedUsageChunk writes a replayed stream's usage chunk.
func appendCachedUsageChunk(b []byte, c *llm.Chunk) []byte {
	b = append(b, `data: {"id":`...)
	b = llm.AppendJSONString(b, c.ID)
	b = append(b, `,"object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, c.Created, 10)
	b = append(b, `,"model":`...)
	b = llm.AppendJSONString(b, c.Model)
	b = append(b, `,"choices":[],"usage":`...)
	b = appendCachedUsage(b, *c.Usage)
	return append(b, "}\n\n"...)
}

// End writes [DONE] after a clean end.
func (e *streamEncoder) End(b []byte, _ llm.Usage, _ bool) []byte { return append(b, doneEvent...) }

// Error writes an error event, and no [DONE]: the client sees a broken
// stream, never a quiet, truncated success.
func (e *streamEncoder) Error(b []byte, err *llm.Error) []byte {
	b = append(b, "data: "...)
	b = append(b, errorBody(err)...)
	return append(b, '\n', '\n')
}

func (e *streamEncoder) Usage() (llm.Usage, bool) { return llm.Usage{}, false }

func (s *Surface) post(decode func([]byte) (*llm.Request, *llm.Error)) http.Handler {
	return s.cfg.Handler(format{}, func(_ *http.Request, body []byte) (*llm.Request, *llm.Error) { return decode(body) })
}

var (
	keepAliveEvent = []byte(": keep-alive\n\n")
	doneEvent      = []byte("data: [DONE]\n\n")
)

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Surface) modelObjects(r *http.Request) []modelObject {
	ms := s.cfg.Gateway.SnapshotFor(r.Context()).Table().Models()
	out := make([]modelObject, 0, len(ms))
	for _, m := range ms {
		owner := m.OwnedBy
		if owner == "" {
			owner = "meridian"
		}
		out = append(out, modelObject{ID: m.ID, Object: "model", Created: m.Created, OwnedBy: owner})
	}
	return out
}

// Models serves GET /v1/models in OpenAI's shape.
func (s *Surface) Models(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if _, e := s.cfg.Authenticate(r); e != nil {
		WriteError(w, e)
		return
	}
	writeJSON(w, struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{"list", s.modelObjects(r)})
}

// Model serves GET /v1/models/{id} in OpenAI's shape.
func (s *Surface) Model(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if _, e := s.cfg.Authenticate(r); e != nil {
		WriteError(w, e)
		return
	}
	id := r.PathValue("id")
	for _, m := range s.modelObjects(r) {
		if m.ID == id {
			writeJSON(w, m)
			return
		}
	}
	WriteError(w, &llm.Error{Status: http.StatusNotFound, Type: llm.TypeInvalidRequest, Code: "model_not_found", Param: "model",
		Message: "The model '" + id + "' does not exist on this Meridian node."})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, llm.AsError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// ErrorBody is OpenAI's error body for e, {"error":{…}}, for surfaces
// that share OpenAI's error shape (the Responses API).
func ErrorBody(e *llm.Error) []byte { return errorBody(e) }

// RateLimitHeaders sets OpenAI's x-ratelimit-* headers from v.
func RateLimitHeaders(h http.Header, v *limits.Verdict, now time.Time) {
	format{}.RateLimitHeaders(h, v, now)
}
