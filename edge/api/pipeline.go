package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"go.opentelemetry.io/otel/trace"
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
	// RateLimitHeaders sets the format's rate-limit headers from v, on
	// answers and refusals alike, for the limits that applied.
	RateLimitHeaders(h http.Header, v *limits.Verdict, now time.Time)
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
		if c.Tracer != nil {
			var span trace.Span
			x.r, span = c.startSpan(r)
			defer x.endSpan(span)
		}
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

	// What settle needs once the request is admitted: who it was for,
	// the limits it was charged to with its token estimate, and what
	// the gateway gave.
	id       Identity
	checks   [2]limits.Check
	limited  []limits.Check
	estimate int64
	res      *gateway.Result
	req      *llm.Request
	chunks   int
	streamed bool
	// cache is what the edge cache decided for the request.
	cache cacheStep
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
	w.Header().Set(HeaderCache, string(cache.Bypass)) // until the cache is consulted
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
	id, e := x.c.authenticate(r, snap.Table())
	if e != nil {
		x.fail(e)
		return
	}
	x.o.Tenant, x.o.Key = id.TenantID, id.KeyID
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
	x.req = req
	x.o.Model = req.Model
	if !id.allowsModel(req.Model) {
		x.fail(ErrModelNotAllowed(id.KeyID, req.Model))
		return
	}
	now := x.c.now()
	if id.exhausted(now) {
		x.fail(ErrInsufficientQuota(id.Tenant))
		return
	}
	// Tokens are charged at admission from the prompt (about four bytes
	// a token) and corrected once the answer says what it used.
	x.estimate = int64(len(body) / 4)
	if cs := id.checks(&x.checks); len(cs) > 0 && x.c.Limits != nil {
		v := x.c.Limits.Admit(now, cs, x.estimate)
		x.f.RateLimitHeaders(w.Header(), &v, now)
		if !v.Allowed {
			x.fail(ErrRateLimited(&v))
			return
		}
		x.limited = cs
	}
	x.id = id
	defer x.settle(snap.Table(), req, body)

	x.cache = x.c.checkCache(r.Context(), snap, &id, req, x.f, r.Header.Get("Cache-Control"), false)
	w.Header().Set(HeaderCache, string(x.cache.status))
	if e := x.cache.hit; e != nil {
		x.serveHit(req, e)
		return
	}

	res, err := x.c.Gateway.DoIn(r.Context(), snap, req)
	x.res = res
	x.o.Target, x.o.Kind = res.Route.Target, res.Route.Kind
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
		x.streamed = true
		if x.cache.write {
			x.recordStream(snap.Table(), req, res)
		}
		x.stream(req, res)
		return
	}
	out, usage, err := x.f.Encode(req, res.Response)
	if err != nil {
		x.fail(llm.AsError(err))
		return
	}
	if x.cache.write {
		x.storePlain(snap.Table(), req, res, usage)
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
	var enc StreamEncoder
	if x.cache.hit != nil {
		enc = x.f.(CacheFormat).StreamCached(x.r, req, res)
	} else {
		enc = x.f.Stream(x.r, req, res)
	}
	x.wrote = true
	sw := x.c.StartStream(x.w, x.start, res.Upstream, x.f.KeepAlive(), &x.o)
	defer sw.Stop()
	var encodeErr error
	streamErr, writeErr := Relay(st, x.start, &x.o, func(c *llm.Chunk, flush bool) error {
		x.chunks++
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
	o.Chunks = x.chunks
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

// settle runs once an admitted request is over: it corrects the
// limits' token charge by what the answer used and records the
// request's usage, unless a peer served it (the peer records it).
func (x *exchange) settle(tab *table.Compiled, req *llm.Request, body []byte) {
	o := &x.o
	answered := x.res != nil && x.res.Response != nil
	var in, out uint64
	switch {
	case !answered:
		// Nothing was served: nothing used.
	case o.HasUsage:
		in, out = tokens(o.Usage)
	default:
		// A stream that reported no usage: the prompt's estimate, and a
		// token per chunk sent.
		in, out = uint64(x.estimate), uint64(x.chunks)
	}
	if x.limited != nil {
		x.c.Limits.Correct(x.c.now(), x.limited, int64(in+out)-x.estimate)
	}
	if x.c.Usage == nil || (answered && x.res.Route.Kind == "peer") {
		return
	}
	s := &served{requestID: req.ID, tenant: x.id.TenantID, key: x.id.KeyID, model: req.Model,
		tokensIn: in, tokensOut: out, start: x.start, stream: x.streamed, batch: IsBatch(x.r.Context())}
	if e := x.cache.hit; e != nil {
		// Priced as the target that produced the answer, at its cached rate.
		s.cached, s.priceRoute = true, gateway.Route{Kind: e.Kind, Provider: e.Provider, UpstreamModel: e.UpstreamModel}
	}
	if x.res != nil {
		s.route = x.res.Route
	}
	switch {
	case x.streamed:
		s.status = http.StatusOK
		s.interrupted = o.Status != "200"
	default:
		s.status, _ = strconv.Atoi(o.Status)
	}
	x.c.record(tab, s)
}
