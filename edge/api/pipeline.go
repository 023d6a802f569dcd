package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Format is what a client format (api/openai, api/anthropic) gives the
// request pipeline: its decoding, its encoding and its error shape.
// Everything else is the pipeline's, once for every format: the method
// check, admission, metrics and the log line, authentication, the body,
// the gateway, 499 for a client that went away, the overhead header and
// panics, which are answered in the client's own format.
type Format interface {
	// WriteError writes e in the format's error shape, with its status.
	WriteError(w http.ResponseWriter, r *http.Request, e *llm.Error)
	// Encode renders a complete, non-streamed answer to req. usage is
	// the answer's token count.
	Encode(req *llm.Request, resp *llm.Response) (body []byte, usage llm.Usage, err error)
	// Stream returns the encoder for one streamed answer to req.
	Stream(r *http.Request, req *llm.Request, res *gateway.Result) StreamEncoder
	// KeepAlive is the whole event sent after a silence on a stream.
	KeepAlive() []byte
}

// Decoder turns a request body into the canonical request. r is there
// for formats that read headers too (anthropic-version).
type Decoder func(r *http.Request, body []byte) (*llm.Request, *llm.Error)

// StreamEncoder encodes one streamed answer. Its methods append to the
// stream's buffer and run one at a time.
type StreamEncoder interface {
	// Chunk appends c's events (possibly none). An error means the
	// upstream sent a chunk that cannot be encoded: the stream then ends
	// as broken.
	Chunk(b []byte, c *llm.Chunk) ([]byte, error)
	// End appends the events of a clean end. u is the stream's usage,
	// when it reported one.
	End(b []byte, u llm.Usage, hasUsage bool) []byte
	// Error appends the event of a stream that broke.
	Error(b []byte, e *llm.Error) []byte
	// Usage is the usage the encoder saw in chunks, for streams that do
	// not report their own.
	Usage() (llm.Usage, bool)
}

// Handler returns the pipeline for POST requests in format f whose
// bodies decode reads.
func (c *Config) Handler(f Format, decode Decoder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := exchange{c: c, f: f, w: w, r: r, start: time.Now()}
		defer x.recover()
		x.serve(decode)
	})
}

// exchange is one request going through the pipeline.
type exchange struct {
	c     *Config
	f     Format
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	o     Outcome
	// wrote is set once the status line is decided: after it, failures
	// can only be reported inside the body.
	wrote bool
}

func (x *exchange) fail(e *llm.Error) {
	x.o.Fail(e)
	x.wrote = true
	x.f.WriteError(x.w, x.r, e)
}

// recover answers a panic in the client's format, as a 500, unless the
// answer has begun; then the connection is cut, as net/http would.
func (x *exchange) recover() {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	log := x.c.logger()
	log.Error("handler panic", "request_id", x.r.Header.Get(HeaderRequestID), "path", x.r.URL.Path, "panic", fmt.Sprint(v))
	if x.wrote {
		panic(http.ErrAbortHandler) // a half-written answer must not look complete
	}
	x.fail(&llm.Error{Status: http.StatusInternalServerError, Type: llm.TypeServer, Message: "internal error", Cause: fmt.Errorf("panic: %v", v)})
}

func (x *exchange) serve(decode Decoder) {
	w, r := x.w, x.r
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		x.wrote = true
		x.f.WriteError(w, r, llm.Errorf(http.StatusMethodNotAllowed, llm.TypeInvalidRequest, "",
			"Method %s is not allowed for %s; use POST.", r.Method, r.URL.Path))
		return
	}
	if m := x.c.Metrics; m != nil {
		m.BeginRequest()
		defer m.EndRequest()
	}
	// One table for the whole request: its revision header (set by the
	// node from the same snapshot), its key check and its plan.
	snap := x.c.Gateway.SnapshotFor(r.Context())
	defer func() { x.c.finish(r, x.start, &x.o, snap.Table()) }()
	if e := x.c.Admit(); e != nil {
		x.fail(e)
		return
	}
	defer x.c.Done()
	if _, e := x.c.authenticate(r, snap.Table()); e != nil {
		x.fail(e)
		return
	}
	body, e := x.c.ReadBody(w, r)
	if e != nil {
		x.fail(e)
		return
	}
	req, e := decode(r, body)
	if e != nil {
		x.fail(e)
		return
	}
	req.ID = r.Header.Get(HeaderRequestID)
	x.o.Model = req.Model

	res, err := x.c.Gateway.DoIn(r.Context(), snap, req)
	x.o.Target = res.Route.Target
	w.Header().Set(HeaderRoute, res.Route.Header())
	if err != nil {
		x.o.Err = err
		if r.Context().Err() != nil {
			x.o.Status = "499" // the client went away; nobody is listening
			return
		}
		x.o.Overhead = time.Since(x.start) - res.Upstream
		w.Header().Set(HeaderOverhead, Micros(x.o.Overhead))
		x.fail(llm.AsError(err))
		return
	}
	if res.Response.Stream != nil {
		x.stream(req, res)
		return
	}
	out, usage, err := x.f.Encode(req, res.Response)
	if err != nil {
		x.fail(llm.AsError(err))
		return
	}
	x.o.Overhead = time.Since(x.start) - res.Upstream
	x.o.Usage, x.o.HasUsage = usage, true
	x.o.Status = "200"
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderOverhead, Micros(x.o.Overhead))
	x.wrote = true
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// stream relays a stream. Headers are decided here: the gateway has
// peeked the first chunk, so from now on a failure can only be reported
// inside the stream.
func (x *exchange) stream(req *llm.Request, res *gateway.Result) {
	st := res.Response.Stream
	defer st.Close()
	enc := x.f.Stream(x.r, req, res)
	x.wrote = true
	sw := x.c.StartStream(x.w, x.start, res.Upstream, x.f.KeepAlive(), &x.o)
	defer sw.Stop()
	var encodeErr error
	streamErr, writeErr := Relay(st, x.start, &x.o, func(c *llm.Chunk, flush bool) error {
		err := sw.Write(func(b []byte) []byte {
			b, encodeErr = enc.Chunk(b, c)
			return b
		}, flush)
		if encodeErr != nil {
			return encodeErr
		}
		return err
	})
	o := &x.o
	o.Usage, o.HasUsage = st.Usage()
	if !o.HasUsage {
		o.Usage, o.HasUsage = enc.Usage()
	}
	if encodeErr != nil {
		streamErr, writeErr = &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream sent a chunk that could not be translated", Cause: encodeErr}, nil
	}
	if writeErr != nil {
		o.Status, o.Err = "499", writeErr
		return
	}
	switch {
	case errors.Is(streamErr, io.EOF):
		sw.Write(func(b []byte) []byte { return enc.End(b, o.Usage, o.HasUsage) }, true)
	case x.r.Context().Err() != nil:
		o.Status, o.Err = "499", streamErr
		sw.Flush()
	default:
		o.Status, o.Err = "stream_error", streamErr
		e := llm.AsError(streamErr)
		if errors.Is(streamErr, llm.ErrStreamCut) {
			e = &llm.Error{Type: llm.TypeUpstream, Code: "stream_interrupted",
				Message: "The upstream provider ended the stream before it was complete; the response is truncated."}
		}
		sw.Write(func(b []byte) []byte { return enc.Error(b, e) }, true)
	}
}
