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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/shared/llm"
)

// Response headers every answer carries.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderRoute     = "X-Meridian-Route"
	HeaderOverhead  = "X-Meridian-Overhead-Us"
)

// Config configures the surface.
type Config struct {
	// Gateway serves the requests.
	Gateway *gateway.Gateway
	// Metrics records per-request metrics; nil disables them.
	Metrics *metrics.Metrics
	// Logger receives one line per request. Nil means slog.Default.
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body; larger ones get a 413.
	MaxBodyBytes int64
	// BodyReadTimeout bounds reading a request body.
	BodyReadTimeout time.Duration
	// KeepAlive is the silence on a stream after which a comment line is
	// sent, so proxies and clients keep the connection open.
	KeepAlive time.Duration
}

// Surface serves the OpenAI-compatible API.
type Surface struct {
	cfg Config
	log *slog.Logger
}

// New returns a Surface.
func New(cfg Config) *Surface {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Surface{cfg: cfg, log: cfg.Logger}
}

// Register adds the surface's routes to mux. Methods are checked by the
// handlers, so a wrong method gets a 405 in OpenAI's format.
func (s *Surface) Register(mux *http.ServeMux) {
	mux.Handle("/v1/chat/completions", s.post(DecodeChat))
	mux.Handle("/v1/completions", s.post(DecodeCompletion))
	mux.Handle("/v1/embeddings", s.post(DecodeEmbedding))
	mux.HandleFunc("/v1/models", s.models)
	mux.HandleFunc("/v1/models/{id...}", s.model)
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

func errorBody(e *llm.Error) []byte {
	o := errorObject{Message: e.Message, Type: e.Type}
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

// authenticate checks the client's key against the table's key hashes. A
// table without keys accepts every request.
func (s *Surface) authenticate(r *http.Request) (keyID string, e *llm.Error) {
	tab := s.cfg.Gateway.Table()
	if !tab.RequireKeys() {
		return "", nil
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		key = r.Header.Get("Api-Key")
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", &llm.Error{Status: http.StatusUnauthorized, Type: llm.TypeInvalidRequest, Code: "invalid_api_key",
			Message: "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'."}
	}
	sum := sha256.Sum256([]byte(key))
	k, ok := tab.KeyByHash(hex.EncodeToString(sum[:]))
	if !ok {
		return "", &llm.Error{Status: http.StatusUnauthorized, Type: llm.TypeInvalidRequest, Code: "invalid_api_key",
			Message: "Incorrect API key provided."}
	}
	return k.ID, nil
}

// outcome is what a request's log line and metrics say.
type outcome struct {
	model, target string
	status        string
	overhead      time.Duration
	ttft          time.Duration
	usage         llm.Usage
	hasUsage      bool
	err           error
}

func (s *Surface) post(decode func([]byte) (*llm.Request, *llm.Error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.InFlight.Inc()
			defer s.cfg.Metrics.InFlight.Dec()
		}
		o := outcome{}
		defer func() { s.finish(r, start, &o) }()

		if _, e := s.authenticate(r); e != nil {
			o.status, o.err = strconv.Itoa(e.Status), e
			WriteError(w, e)
			return
		}
		body, e := s.readBody(w, r)
		if e != nil {
			o.status, o.err = strconv.Itoa(e.Status), e
			WriteError(w, e)
			return
		}
		req, e := decode(body)
		if e != nil {
			o.status, o.err = strconv.Itoa(e.Status), e
			WriteError(w, e)
			return
		}
		req.ID = r.Header.Get(HeaderRequestID)
		o.model = req.Model

		res, err := s.cfg.Gateway.Do(r.Context(), req)
		o.target = res.Route.Target
		w.Header().Set(HeaderRoute, res.Route.Header())
		if err != nil {
			o.err = err
			if r.Context().Err() != nil {
				o.status = "499" // the client went away; nobody is listening
				return
			}
			e := llm.AsError(err)
			o.status = strconv.Itoa(e.Status)
			o.overhead = time.Since(start) - res.Upstream
			w.Header().Set(HeaderOverhead, micros(o.overhead))
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
					o.status, o.err = strconv.Itoa(e.Status), err
					WriteError(w, e)
					return
				}
			}
			o.overhead = time.Since(start) - res.Upstream
			o.usage, o.hasUsage = resp.Usage, true
			o.status = "200"
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set(HeaderOverhead, micros(o.overhead))
			w.WriteHeader(http.StatusOK)
			w.Write(body)
			return
		}
		s.stream(w, r, req.IncludeUsage, start, res, &o)
	})
}

func micros(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return strconv.FormatInt(d.Microseconds(), 10)
}

func (s *Surface) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *llm.Error) {
	rc := http.NewResponseController(w)
	if s.cfg.BodyReadTimeout > 0 {
		rc.SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
		defer rc.SetReadDeadline(time.Time{})
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, tooLarge(s.cfg.MaxBodyBytes)
	}
	n := r.ContentLength
	if n < 0 || n > 64<<10 {
		n = 64 << 10
	}
	buf := make([]byte, 0, n+1)
	lr := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, tooLarge(s.cfg.MaxBodyBytes)
			}
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "Could not read the request body: %v.", err)
		}
	}
	if len(buf) == 0 {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is empty; send a JSON object.")
	}
	return buf, nil
}

func tooLarge(limit int64) *llm.Error {
	return llm.Errorf(http.StatusRequestEntityTooLarge, llm.TypeInvalidRequest, "",
		"The request body exceeds this server's limit of %d bytes.", limit)
}

// stream relays an SSE stream. Headers are already decided: the gateway
// has peeked the first chunk, so from here on a failure can only be
// reported inside the stream.
//
// Chunks are read and written on the handler's goroutine, and written to
// the client only when the upstream has nothing more buffered: a burst
// costs one write, a lone chunk is never held back. A timer sends
// keep-alive comments while the upstream is silent; sseWriter.mu
// serialises it with the relay.
func (s *Surface) stream(w http.ResponseWriter, r *http.Request, includeUsage bool, start time.Time, res *gateway.Result, o *outcome) {
	st := res.Response.Stream
	defer st.Close()
	buffered, _ := st.(llm.Buffered)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.overhead = time.Since(start) - res.Upstream
	h.Set(HeaderOverhead, micros(o.overhead))
	w.WriteHeader(http.StatusOK)
	o.status = "200"

	sw := &sseWriter{w: w, rc: http.NewResponseController(w), buf: make([]byte, 0, 4<<10)}
	defer sw.stop()
	sw.startKeepAlive(s.cfg.KeepAlive)
	sent := 0
	for {
		chunk, err := st.Next()
		if err != nil {
			s.endStream(sw, r.Context(), err, o)
			o.usage, o.hasUsage = st.Usage()
			return
		}
		// Flush the first chunks at once, for time to first token; after
		// that, whenever the upstream has nothing more in memory.
		if chunk.Raw == nil && len(chunk.Choices) == 0 && chunk.Usage != nil && !includeUsage {
			continue // a translating adapter's usage chunk, which this client did not ask for
		}
		flush := sent < 2 || buffered == nil || buffered.Buffered() == 0
		if err := sw.chunk(chunk, flush); err != nil {
			o.status, o.err = "499", err
			return
		}
		if sent == 0 {
			o.ttft = time.Since(start)
		}
		sent++
	}
}

// maxPending bounds the events held back while the upstream has more in
// memory; a burst is written in pieces of about this size, so a relay
// makes as few writes as a byte-copying proxy does.
const maxPending = 32 << 10

// sseWriter writes events to a client. Its mutex orders the relay's
// writes and the keep-alive timer's; nothing else is locked while it is
// held.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu      sync.Mutex
	buf     []byte
	last    time.Time // last write, for keep-alive
	stopped bool
	ka      *time.Timer
	every   time.Duration
}

// chunk queues one chunk as an event and, when flush is set or enough is
// queued, writes the queue to the client in one piece.
func (sw *sseWriter) chunk(c *llm.Chunk, flush bool) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.buf = append(sw.buf, "data: "...)
	sw.buf = c.AppendJSON(sw.buf)
	sw.buf = append(sw.buf, '\n', '\n')
	if !flush && len(sw.buf) < maxPending {
		return nil
	}
	return sw.flushLocked()
}

// data queues one event holding data and writes the queue out.
func (sw *sseWriter) data(data []byte, flush bool) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.buf = append(sw.buf, "data: "...)
	sw.buf = append(sw.buf, data...)
	sw.buf = append(sw.buf, '\n', '\n')
	if !flush && len(sw.buf) < maxPending {
		return nil
	}
	return sw.flushLocked()
}

func (sw *sseWriter) flushLocked() error {
	if len(sw.buf) > 0 {
		_, err := sw.w.Write(sw.buf)
		sw.buf = sw.buf[:0]
		if err != nil {
			return err
		}
	}
	if sw.ka != nil {
		sw.last = time.Now()
	}
	return sw.rc.Flush()
}

func (sw *sseWriter) flush() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.flushLocked()
}

func (sw *sseWriter) startKeepAlive(every time.Duration) {
	if every <= 0 {
		return
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.every, sw.last = every, time.Now()
	sw.ka = time.AfterFunc(every, sw.keepAlive)
}

// keepAlive runs on the timer's goroutine. It writes a comment if
// nothing was written for a whole interval, and otherwise re-arms for the
// rest of it, so the relay pays one clock read per chunk, not a timer
// reset.
func (sw *sseWriter) keepAlive() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.stopped {
		return
	}
	if idle := time.Since(sw.last); idle < sw.every {
		sw.ka.Reset(sw.every - idle)
		return
	}
	sw.buf = append(sw.buf, ": keep-alive\n\n"...)
	if sw.flushLocked() != nil {
		return // the client is gone; the relay will notice
	}
	sw.ka.Reset(sw.every)
}

// stop ends keep-alives; after it returns the timer never touches the
// ResponseWriter again.
func (sw *sseWriter) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.stopped = true
	if sw.ka != nil {
		sw.ka.Stop()
	}
}

// endStream finishes a stream: [DONE] after a clean end, an error event
// and no [DONE] after anything else.
func (s *Surface) endStream(sw *sseWriter, ctx context.Context, err error, o *outcome) {
	if errors.Is(err, io.EOF) {
		sw.data(doneMarker, true)
		return
	}
	if ctx.Err() != nil {
		o.status, o.err = "499", err
		sw.flush()
		return
	}
	o.status, o.err = "stream_error", err
	e := llm.AsError(err)
	if errors.Is(err, llm.ErrStreamCut) {
		e = &llm.Error{Type: llm.TypeUpstream, Code: "stream_interrupted",
			Message: "The upstream provider ended the stream before it was complete; the response is truncated."}
	}
	sw.data(errorBody(e), true)
}

var doneMarker = []byte("[DONE]")

// finish writes the request's log line and metrics.
func (s *Surface) finish(r *http.Request, start time.Time, o *outcome) {
	d := time.Since(start)
	if m := s.cfg.Metrics; m != nil {
		target := o.target
		if target == "" {
			target = "none"
		}
		m.Requests.WithLabelValues(o.model, target, o.status).Inc()
		if o.target != "" {
			m.ObserveOverhead(o.overhead)
		}
		if o.ttft > 0 {
			m.TTFT.WithLabelValues(o.model, target).Observe(o.ttft.Seconds())
		}
		if o.hasUsage {
			m.Tokens.WithLabelValues(o.model, target, "in").Add(float64(o.usage.PromptTokens))
			m.Tokens.WithLabelValues(o.model, target, "out").Add(float64(o.usage.CompletionTokens))
		}
	}
	if !s.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", r.Header.Get(HeaderRequestID)),
		slog.String("path", r.URL.Path),
		slog.String("model", o.model),
		slog.String("target", o.target),
		slog.String("status", o.status),
		slog.Int64("duration_us", d.Microseconds()),
		slog.Int64("overhead_us", o.overhead.Microseconds()),
	}
	if o.hasUsage {
		attrs = append(attrs, slog.Int("tokens_in", o.usage.PromptTokens), slog.Int("tokens_out", o.usage.CompletionTokens))
	}
	if o.err != nil {
		// Causes may name upstream hosts; logs are for operators, and
		// provider keys never appear in a cause.
		attrs = append(attrs, slog.String("error", o.err.Error()))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
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

func (s *Surface) models(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if _, e := s.authenticate(r); e != nil {
		WriteError(w, e)
		return
	}
	writeJSON(w, struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{"list", s.modelObjects()})
}

func (s *Surface) model(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if _, e := s.authenticate(r); e != nil {
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
