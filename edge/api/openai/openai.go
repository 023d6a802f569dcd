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
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/llm"
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

func (s *Surface) post(decode func([]byte) (*llm.Request, *llm.Error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.BeginRequest()
			defer s.cfg.Metrics.EndRequest()
		}
		o := api.Outcome{}
		defer func() { s.cfg.Finish(r, start, &o) }()
		if e := s.cfg.Admit(); e != nil {
			o.Fail(e)
			WriteError(w, e)
			return
		}
		defer s.cfg.Done()

		if _, e := s.cfg.Authenticate(r); e != nil {
			o.Fail(e)
			WriteError(w, e)
			return
		}
		body, e := s.cfg.ReadBody(w, r)
		if e != nil {
			o.Fail(e)
			WriteError(w, e)
			return
		}
		req, e := decode(body)
		if e != nil {
			o.Fail(e)
			WriteError(w, e)
			return
		}
		req.ID = r.Header.Get(api.HeaderRequestID)
		o.Model = req.Model

		res, err := s.cfg.Gateway.Do(r.Context(), req)
		o.Target = res.Route.Target
		w.Header().Set(api.HeaderRoute, res.Route.Header())
		if err != nil {
			o.Err = err
			if r.Context().Err() != nil {
				o.Status = "499" // the client went away; nobody is listening
				return
			}
			e := llm.AsError(err)
			o.Fail(e)
			o.Overhead = time.Since(start) - res.Upstream
			w.Header().Set(api.HeaderOverhead, api.Micros(o.Overhead))
			WriteError(w, e)
			return
		}
		resp := res.Response
		if resp.Stream == nil {
			body := resp.Body
			if body == nil && resp.Completion != nil {
				body, err = json.Marshal(resp.Completion)
				if err != nil {
					e := llm.AsError(err)
					o.Fail(e)
					WriteError(w, e)
					return
				}
			}
			o.Overhead = time.Since(start) - res.Upstream
			o.Usage, o.HasUsage = resp.Usage, true
			o.Status = "200"
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set(api.HeaderOverhead, api.Micros(o.Overhead))
			w.WriteHeader(http.StatusOK)
			w.Write(body)
			return
		}
		s.stream(w, r, req.IncludeUsage, start, res, &o)
	})
}

// stream relays an SSE stream. Headers are already decided: the gateway
// has peeked the first chunk, so from here on a failure can only be
// reported inside the stream.
func (s *Surface) stream(w http.ResponseWriter, r *http.Request, includeUsage bool, start time.Time, res *gateway.Result, o *api.Outcome) {
	st := res.Response.Stream
	defer st.Close()
	sw := s.cfg.StartStream(w, start, res.Upstream, keepAliveEvent, o)
	defer sw.Stop()
	streamErr, writeErr := api.Relay(st, start, o, func(c *llm.Chunk, flush bool) error {
		if c.Raw == nil && len(c.Choices) == 0 && c.Usage != nil && !includeUsage {
			return nil // a translating adapter's usage chunk, which this client did not ask for
		}
		return sw.Write(func(b []byte) []byte {
			b = append(b, "data: "...)
			b = c.AppendJSON(b)
			return append(b, '\n', '\n')
		}, flush)
	})
	o.Usage, o.HasUsage = st.Usage()
	if writeErr != nil {
		o.Status, o.Err = "499", writeErr
		return
	}
	s.endStream(sw, r.Context(), streamErr, o)
}

var (
	keepAliveEvent = []byte(": keep-alive\n\n")
	doneEvent      = []byte("data: [DONE]\n\n")
)

// endStream finishes a stream: [DONE] after a clean end, an error event
// and no [DONE] after anything else.
func (s *Surface) endStream(sw *api.StreamWriter, ctx context.Context, err error, o *api.Outcome) {
	if errors.Is(err, io.EOF) {
		sw.Write(func(b []byte) []byte { return append(b, doneEvent...) }, true)
		return
	}
	if ctx.Err() != nil {
		o.Status, o.Err = "499", err
		sw.Flush()
		return
	}
	o.Status, o.Err = "stream_error", err
	e := llm.AsError(err)
	if errors.Is(err, llm.ErrStreamCut) {
		e = &llm.Error{Type: llm.TypeUpstream, Code: "stream_interrupted",
			Message: "The upstream provider ended the stream before it was complete; the response is truncated."}
	}
	sw.Write(func(b []byte) []byte {
		b = append(b, "data: "...)
		b = append(b, errorBody(e)...)
		return append(b, '\n', '\n')
	}, true)
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Surface) modelObjects() []modelObject {
	ms := s.cfg.Gateway.Table().Models()
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
	}{"list", s.modelObjects()})
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
	for _, m := range s.modelObjects() {
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
