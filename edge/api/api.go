// Package api holds what the edge's API surfaces share: the request
// pipeline every POST goes through (Handler: method, admission, auth,
// body, decode, the key's model access, the tenant's budget, key and
// tenant rate limits, the edge cache (CacheFormat), gateway, 499,
// overhead, panics, the usage record),
// the response headers every answer carries, client authentication
// against the routing table's key hashes (an Identity: key and tenant),
// bounded body reading, the stream writer that relays events with
// coalesced writes and keep-alives, and the per-request log line and
// metrics.
//
// Usage records: a request that was admitted (authenticated, its model
// allowed, its tenant within budget and its limits) yields exactly one
// record on the node that served it; a request a peer served is
// recorded by the peer (Forwarded), never here. Refusals before
// admission are counted in metrics only.
//
// Surfaces (api/openai, api/anthropic) own their wire formats and give
// the pipeline only their decoding, encoding and error shape (Format);
// this package knows no format, and must never answer a client in one
// it chose itself.
package api

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/edge/usage"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// Response headers every answer carries.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderRoute     = "X-Meridian-Route"
	HeaderOverhead  = "X-Meridian-Overhead-Us"
)

// Config is what every surface is built from.
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
	// KeepAlive is the silence on a stream after which a keep-alive is
	// sent, so proxies and clients keep the connection open.
	KeepAlive time.Duration
	// NoAuth accepts requests without a key: the edge's auth mode
	// "none". The zero value demands a key the routing table lists, so
	// a surface built without thought about auth is closed, not open.
	NoAuth bool
	// StreamWriteTimeout bounds each write of a stream to the client; a
	// client that reads nothing for this long has its stream ended, which
	// closes the upstream and frees what it held. Zero means no bound.
	StreamWriteTimeout time.Duration
	// Admission bounds the requests served at once, across surfaces;
	// nil means no bound.
	Admission *Admission
	// Limits enforces keys' and tenants' RPM and TPM; nil enforces none.
	Limits *limits.Limiter
	// Usage receives one record per request this node serves; nil
	// records none.
	Usage *usage.Recorder
	// Node and Region name this node in usage records; Region is also
	// where the cache holds answers, for residency.
	Node, Region string
	// Cache answers repeated requests from this edge's memory; nil
	// disables it (every answer says x-meridian-cache: bypass).
	Cache *cache.Store
	// Semantic is the semantic cache's index, and SemanticModel the
	// model whose embeddings it compares; either unset turns the
	// semantic cache off. A route's or tenant's cache similarity turns
	// it on for their requests.
	Semantic      *cache.Semantic
	SemanticModel string
	// Now is the clock for key expiry, budgets and limits; nil means
	// time.Now.
	Now func() time.Time
	// Tracer, when set, records a server span per request (trace.go);
	// nil records none.
	Tracer trace.Tracer
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Admission counts the API requests being served against a limit. It is
// shared by every surface of a node, so one client format cannot starve
// the other of the budget.
type Admission struct {
	max int64
	n   atomic.Int64
}

// NewAdmission returns an Admission that lets max requests in at once.
func NewAdmission(max int) *Admission { return &Admission{max: int64(max)} }

// Admit counts a request in, or refuses it with a 503 when the limit is
// reached. Call Done for every admitted request.
func (c *Config) Admit() *llm.Error {
	a := c.Admission
	if a == nil {
		return nil
	}
	if a.n.Add(1) > a.max {
		a.n.Add(-1)
		return &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeServer, Code: "server_overloaded",
			Message: "This Meridian node is serving as many requests as it may; retry shortly.", RetryAfter: time.Second, Retryable: true}
	}
	return nil
}

// Done counts an admitted request out.
func (c *Config) Done() {
	if a := c.Admission; a != nil {
		a.n.Add(-1)
	}
}

// Authenticate checks the client's key against the table's key hashes
// and returns who the request is for. The key may come as
// "Authorization: Bearer", "x-api-key" (Anthropic's SDKs) or "api-key".
//
// Unless NoAuth is set, a key the table lists is required, and a table
// that lists none refuses every request: deleting the last key, or a
// control plane that has none yet, closes the edge rather than opening
// it. A disabled or expired key is answered exactly as an unknown one,
// so the answer never says whether a key exists. With NoAuth every
// request is accepted; a usable key the table lists still names its
// tenant, so tenant policies apply.
func (c *Config) Authenticate(r *http.Request) (Identity, *llm.Error) {
	return c.authenticate(r, c.Gateway.SnapshotFor(r.Context()).Table())
}

func (c *Config) authenticate(r *http.Request, tab *table.Compiled) (Identity, *llm.Error) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		key = r.Header.Get("X-Api-Key")
	}
	if key == "" {
		key = r.Header.Get("Api-Key")
	}
	key = strings.TrimSpace(key)
	if h, ok := r.Context().Value(keyHashKey{}).(string); ok {
		// An in-process caller (a batch line) acts as a key it names
		// by hash; the key must still be usable now.
		id, ok := c.lookupHash(r, tab, h)
		if !ok {
			return Identity{}, errBadKey
		}
		return id, nil
	}
	if c.NoAuth {
		if key == "" || !tab.HasKeys() {
			return Identity{}, nil
		}
		id, _ := c.lookup(r, tab, key)
		return id, nil
	}
	if !tab.HasKeys() {
		return Identity{}, ErrNoKeys()
	}
	if key == "" {
		return Identity{}, &llm.Error{Status: http.StatusUnauthorized, Type: llm.TypeAuthentication, Code: "invalid_api_key",
			Message: "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY' or in x-api-key."}
	}
	id, ok := c.lookup(r, tab, key)
	if !ok {
		return Identity{}, errBadKey
	}
	return id, nil
}

// errBadKey answers an unknown, disabled and expired key alike.
var errBadKey = &llm.Error{Status: http.StatusUnauthorized, Type: llm.TypeAuthentication, Code: "invalid_api_key",
	Message: "Incorrect API key provided."}

// ErrNoKeys is the answer of an edge in auth mode "keys" whose routing
// table lists no keys: it can authenticate nobody, so it refuses
// everybody.
func ErrNoKeys() *llm.Error {
	return &llm.Error{Status: http.StatusUnauthorized, Type: llm.TypeAuthentication, Code: "invalid_api_key",
		Message: "This Meridian edge requires an API key but has no keys to accept: its routing table lists none, so every request is refused until an operator adds one."}
}

// lookup returns the identity of the table's usable key whose hash
// matches key, and hands it to the router (tenant, key regions).
func (c *Config) lookup(r *http.Request, tab *table.Compiled, key string) (Identity, bool) {
	sum := sha256.Sum256([]byte(key))
	return c.lookupHash(r, tab, hex.EncodeToString(sum[:]))
}

// lookupHash is lookup by the key's lowercase hex SHA-256.
func (c *Config) lookupHash(r *http.Request, tab *table.Compiled, hexHash string) (Identity, bool) {
	k, ok := tab.KeyByHash(hexHash)
	if !ok || !usable(k, c) {
		return Identity{}, false
	}
	id := Identity{KeyID: k.ID, TenantID: k.Tenant, Key: k}
	if k.Tenant != "" {
		id.Tenant, _ = tab.Tenant(k.Tenant)
	}
	if cl := gateway.ClientFrom(r.Context()); cl != nil {
		// The tenant's and the key's policies reach the router.
		cl.Tenant, cl.Key, cl.KeyRegions = k.Tenant, k.ID, k.AllowedRegions
	}
	return id, true
}

// ReadBody reads a request body within the size and time limits.
func (c *Config) ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, *llm.Error) {
	rc := http.NewResponseController(w)
	if c.BodyReadTimeout > 0 {
		rc.SetReadDeadline(time.Now().Add(c.BodyReadTimeout))
		defer rc.SetReadDeadline(time.Time{})
	}
	if r.ContentLength > c.MaxBodyBytes {
		return nil, tooLarge(c.MaxBodyBytes)
	}
	n := r.ContentLength
	if n < 0 || n > 64<<10 {
		n = 64 << 10
	}
	buf := make([]byte, 0, n+1)
	lr := http.MaxBytesReader(w, r.Body, c.MaxBodyBytes)
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
				return nil, tooLarge(c.MaxBodyBytes)
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

// LabelUnknown is the metric label for a model or target the routing
// table does not know.
const LabelUnknown = "unknown"

// labels returns o's model and target as metric labels. Only names the
// routing table knows become labels: the model comes from the client, and
// a label per name a client makes up would grow /metrics without bound.
// The log line keeps the names as they came.
func (c *Config) labels(o *Outcome, tab *table.Compiled) (model, target string) {
	model, target = LabelUnknown, LabelUnknown
	if o.Model == "" {
		model = "none" // refused before the body named one
	} else if tab != nil {
		if _, ok := tab.Model(o.Model); ok {
			model = o.Model
		} else if _, ok := tab.Route(o.Model); ok {
			model = o.Model
		}
	}
	switch kind, id, _ := strings.Cut(o.Target, "/"); {
	case o.Target == "":
		target = "none"
	case o.Target == "local" || o.Target == "cache":
		target = o.Target
	case tab == nil:
	case kind == "provider":
		if _, ok := tab.Provider(id); ok {
			target = o.Target
		}
	case kind == "peer":
		if _, ok := tab.Node(id); ok {
			target = o.Target
		}
	}
	return model, target
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// Micros renders d as whole microseconds for x-meridian-overhead-us.
func Micros(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return strconv.FormatInt(d.Microseconds(), 10)
}

// Outcome is what a request's log line and metrics say.
type Outcome struct {
	Model, Target string
	// Kind is Target's kind: local, peer, provider or cache.
	Kind string
	// Tenant and Key are who the request was for, once authenticated.
	Tenant, Key string
	// Status is the HTTP status, "499" when the client went away, or
	// "stream_error" when a stream broke after its first byte.
	Status   string
	Overhead time.Duration
	TTFT     time.Duration
	Usage    llm.Usage
	HasUsage bool
	Err      error
	// Chunks counts the chunks a stream sent.
	Chunks int
}

// kindLabel is the target kind as a metric label: one of a fixed set.
func (o *Outcome) kindLabel() string {
	switch o.Kind {
	case "local", "peer", "provider", "cache":
		return o.Kind
	}
	return "none"
}

// errorType is the failure's type as a metric label: the API error's
// type (a fixed set), or what ended a stream.
func (o *Outcome) errorType() string {
	switch o.Status {
	case "499":
		return "client_closed"
	case "stream_error":
		return "stream_error"
	}
	var e *llm.Error
	if errors.As(o.Err, &e) {
		switch e.Type {
		case llm.TypeInvalidRequest, llm.TypeAuthentication, llm.TypePermission, llm.TypeNotFound, llm.TypeRateLimit,
			llm.TypeUpstream, llm.TypeTimeout, llm.TypeServer, llm.TypeOverloaded:
			// Upstreams' own types may be anything: only ours are labels.
			return e.Type
		}
	}
	return LabelUnknown
}

// Fail records e as the outcome.
func (o *Outcome) Fail(e *llm.Error) {
	o.Status, o.Err = strconv.Itoa(e.Status), e
}

// finish writes the request's log line and metrics; labels come from
// tab, the request's table.
func (c *Config) finish(r *http.Request, start time.Time, o *Outcome, tab *table.Compiled) {
	d := time.Since(start)
	if m := c.Metrics; m != nil {
		model, target := c.labels(o, tab)
		m.Requests.WithLabelValues(model, target, o.Status).Inc()
		if o.Target != "" {
			m.ObserveOverhead(o.Overhead)
		}
		if o.TTFT > 0 {
			m.TTFT.WithLabelValues(model, target).Observe(o.TTFT.Seconds())
		}
		if o.HasUsage {
			m.Tokens.WithLabelValues(model, target, "in").Add(float64(o.Usage.PromptTokens))
			m.Tokens.WithLabelValues(model, target, "out").Add(float64(o.Usage.CompletionTokens))
		}
		kind := o.kindLabel()
		if o.Chunks > 1 && o.TTFT > 0 && d > o.TTFT {
			m.InterToken.WithLabelValues(model, kind).Observe((d - o.TTFT).Seconds() / float64(o.Chunks-1))
		}
		if o.Err != nil || o.Status != "200" {
			m.Errors.WithLabelValues(model, kind, o.errorType()).Inc()
		}
	}
	log := c.logger()
	if !log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", r.Header.Get(HeaderRequestID)),
		slog.String("path", r.URL.Path),
		slog.String("model", o.Model),
		slog.String("target", o.Target),
		slog.String("kind", o.Kind),
		slog.String("tenant", o.Tenant),
		slog.String("key", o.Key),
		slog.String("status", o.Status),
		slog.Int64("duration_us", d.Microseconds()),
		slog.Int64("overhead_us", o.Overhead.Microseconds()),
	}
	if o.HasUsage {
		attrs = append(attrs, slog.Int("tokens_in", o.Usage.PromptTokens), slog.Int("tokens_out", o.Usage.CompletionTokens))
	}
	if id := telemetry.TraceID(r.Context()); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	if o.Err != nil {
		// Causes may name upstream hosts; logs are for operators, and
		// provider keys never appear in a cause.
		attrs = append(attrs, slog.String("error", o.Err.Error()))
	}
	log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// maxPending bounds the events held back while the upstream has more in
// memory; a burst is written in pieces of about this size, so a relay
// makes as few writes as a byte-copying proxy does.
const maxPending = 32 << 10

// StreamWriter writes server-sent events to a client. Events are queued
// and written in one piece when the caller asks for a flush (the
// upstream has nothing more in memory) or enough is queued. A timer
// writes the keep-alive event after a silence; the mutex orders it with
// the relay, and nothing else is locked while it is held.
type StreamWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	keepAlive []byte
	// writeTimeout is the write deadline set before each flush; zero
	// means none.
	writeTimeout time.Duration

	mu      sync.Mutex
	buf     []byte
	last    time.Time // last write, for keep-alive
	stopped bool
	ka      *time.Timer
	every   time.Duration
}

// StartStream answers 200 with an event stream's headers, records the
// overhead so far (time since start, upstream wait excluded) and returns
// the writer for the events, which sends keepAlive (whole events, such as
// ": keep-alive\n\n") after every silence of c.KeepAlive. Call Stop on it
// before the handler returns.
func (c *Config) StartStream(w http.ResponseWriter, start time.Time, upstream time.Duration, keepAlive []byte, o *Outcome) *StreamWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.Overhead = time.Since(start) - upstream
	h.Set(HeaderOverhead, Micros(o.Overhead))
	w.WriteHeader(http.StatusOK)
	o.Status = "200"
	sw := NewStreamWriter(w, c.KeepAlive, keepAlive)
	sw.writeTimeout = c.StreamWriteTimeout
	return sw
}

// NewStreamWriter returns a writer for w that sends keepAlive after every
// silence of the given length; zero turns keep-alives off. Call Stop
// before the handler returns.
func NewStreamWriter(w http.ResponseWriter, every time.Duration, keepAlive []byte) *StreamWriter {
	sw := &StreamWriter{w: w, rc: http.NewResponseController(w), keepAlive: keepAlive, buf: make([]byte, 0, 4<<10)}
	if every > 0 {
		sw.every, sw.last = every, time.Now()
		sw.ka = time.AfterFunc(every, sw.onSilence)
	}
	return sw
}

// Write queues the events that add appends to the buffer it is given,
// and writes the queue out when flush is set or enough is queued.
func (sw *StreamWriter) Write(add func(buf []byte) []byte, flush bool) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.buf = add(sw.buf)
	if !flush && len(sw.buf) < maxPending {
		return nil
	}
	return sw.flushLocked()
}

// Flush writes out whatever is queued.
func (sw *StreamWriter) Flush() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.flushLocked()
}

func (sw *StreamWriter) flushLocked() error {
	if sw.writeTimeout > 0 {
		// Without a deadline, a client that stops reading blocks this
		// write, and with it the handler, its upstream and its engine
		// slot, for as long as the connection lives. The server has no
		// WriteTimeout (it would cut long streams), so each flush gets
		// its own.
		if err := sw.rc.SetWriteDeadline(time.Now().Add(sw.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
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

// onSilence runs on the timer's goroutine. It writes the keep-alive if
// nothing was written for a whole interval, and otherwise re-arms for
// the rest of it, so the relay pays one clock read per write, not a
// timer reset.
func (sw *StreamWriter) onSilence() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.stopped {
		return
	}
	if idle := time.Since(sw.last); idle < sw.every {
		sw.ka.Reset(sw.every - idle)
		return
	}
	sw.buf = append(sw.buf, sw.keepAlive...)
	if sw.flushLocked() != nil {
		return // the client is gone; the relay will notice
	}
	sw.ka.Reset(sw.every)
}

// Stop ends keep-alives; after it returns the timer never touches the
// ResponseWriter again. The last write deadline is renewed for the
// server's own final flush; the connection keeps it, so whoever serves
// the connection's next request must clear it (the node does).
func (sw *StreamWriter) Stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.stopped = true
	if sw.ka != nil {
		sw.ka.Stop()
	}
	if sw.writeTimeout > 0 {
		sw.rc.SetWriteDeadline(time.Now().Add(sw.writeTimeout))
	}
}

// Relay reads a stream to its end and hands each chunk to write, telling
// it whether to flush: always for the first chunks (time to first token),
// then whenever the upstream has nothing more in memory. It returns the
// stream's terminal error (io.EOF after a clean end) or write's error,
// and records the time to the first chunk.
func Relay(st llm.Stream, start time.Time, o *Outcome, write func(c *llm.Chunk, flush bool) error) (streamErr, writeErr error) {
	buffered, _ := st.(llm.Buffered)
	sent := 0
	for {
		chunk, err := st.Next()
		if err != nil {
			return err, nil
		}
		flush := sent < 2 || buffered == nil || buffered.Buffered() == 0
		if err := write(chunk, flush); err != nil {
			return nil, err
		}
		if sent == 0 {
			o.TTFT = time.Since(start)
		}
		sent++
	}
}

// InvalidUTF8 returns the offset of the first byte of body that is not
// valid UTF-8, or -1 when it all is. JSON is UTF-8 (RFC 8259), and an
// upstream that gets a body that is not may reject it, mangle it or, as
// OpenAI's API does, refuse it; the surfaces refuse it first, in the
// client's own format.
func InvalidUTF8(body []byte) int {
	if utf8.Valid(body) {
		return -1 // the fast path every well-formed request takes
	}
	for i := 0; i < len(body); {
		r, n := utf8.DecodeRune(body[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}
