// Package providermock is a mock LLM provider that speaks real provider wire
// formats: OpenAI's, Anthropic's Messages API, Gemini's generateContent and
// Ollama's native API (one per Server, chosen by Config.Kind). Tests,
// benchmarks and the quick start use it as a stand-in for paid providers. It
// must never call out to the network: it only answers requests, from fixed
// data and the request itself.
//
// Every kind reads the same directives and answers with the same
// deterministic content (Content, ToolArguments, Embedding), so a test can
// run one scenario against each format and expect the same canonical
// result. The other kinds' endpoints are listed in anthropic.go, gemini.go
// and ollama.go.
//
// # Endpoints (kind "openai")
//
//	POST /v1/chat/completions   chat.completion, or a chat.completion.chunk SSE stream
//	POST /v1/completions        legacy text_completion, plain or streamed
//	POST /v1/embeddings         deterministic vectors, "float" or "base64"
//	GET  /v1/models             fixed model list
//	GET  /v1/models/{id}        one model, or 404
//
// # Directives
//
// Because a gateway forwards only the body, a test picks a behaviour with a
// directive inside the text: the token "#mock" followed by space-separated
// key=value pairs, in the last user message of a chat request, the prompt of
// a completion (the first prompt when there are several) or the first input
// of an embeddings request (each kind's equivalent for the other formats):
//
//	hello #mock status=429 retry_after=7
//
// Parsing stops at the first token after "#mock" that is not key=value.
// Unknown keys are ignored (so a test can add id=xyz to make a directive
// unique); a known key with a bad value is answered with a 400 error.
//
//	status=N          answer with error N (400, 401, 429, 500, 503, or any other 4xx/5xx) in the kind's format
//	retry_after=S     Retry-After seconds (429 defaults to 1; other statuses send it only when given)
//	latency_ms=N      wait N ms before the response headers
//	chunk_delay_ms=N  wait N ms between streamed chunks
//	chunks=N          number of content chunks (completion tokens per choice)
//	cut_after=N       stream: abort the connection after N content chunks (no [DONE]);
//	                  plain responses: abort halfway through the body
//	error_after=N     stream: after N content chunks send the format's mid-stream
//	                  error (anthropic, gemini, ollama; openai ignores it) and end
//	tool_call=NAME    answer with a call to function NAME (the request must carry
//	                  tools; anthropic, gemini and ollama also need NAME among them)
//	silent_ms=N       stream: stall N ms after the first chunk
//	fail_first=N      fail (with status, default 500) the first N requests that
//	                  carry this exact directive text, then succeed
//
// The model name is a directive too: model "mock-error-500" behaves as
// status=500, "mock-error-429" as status=429, and so on. Config gives the
// server-wide defaults; directives override them per request.
//
// Every request is recorded (the last 1,000 are kept) and can be read back
// with Requests; a request whose client went away before the handler
// finished is also sent on Canceled.
package providermock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// Kinds of provider the mock can speak.
const (
	KindOpenAI    = "openai"
	KindAnthropic = "anthropic"
	KindGemini    = "gemini"
	KindOllama    = "ollama"
	KindAzure     = "azure"
	KindBedrock   = "bedrock"
	KindVertex    = "vertex"
)

const (
	defaultChunks  = 16
	maxRecorded    = 1000
	canceledBuffer = 64
	maxBodyBytes   = 32 << 20
	maxChunks      = 1 << 20
	directiveToken = "#mock"
)

// Config sets the server-wide behaviour. Directives in a request override it.
type Config struct {
	Kind       string                           // "openai", "anthropic", "gemini" or "ollama"; "" means "openai"
	APIKey     string                           // if non-empty, required: Bearer token (openai, ollama), x-api-key (anthropic), x-goog-api-key or ?key= (gemini)
	Latency    time.Duration                    // delay before response headers
	ChunkDelay time.Duration                    // delay between streamed chunks
	Chunks     int                              // default content chunk count (<=0 means 16)
	Logf       func(format string, args ...any) // optional

	// BearerToken (azure) is an Entra ID token accepted in
	// Authorization instead of APIKey in api-key.
	BearerToken string
	// AWS (bedrock), when set, is the credential every request's SigV4
	// signature is recomputed with and compared to; nil checks none.
	AWS *AWSCredentials
	// Tokens (vertex), when set, is the OAuth token server whose access
	// tokens requests must carry; nil checks none.
	Tokens *TokenServer
	// Project and Location (vertex), when set, are the only ones whose
	// URLs are served; others get 404.
	Project, Location string
}

// DefaultConfig returns the configuration the mockprovider command starts
// from: kind openai, no key, no delays, 16 chunks.
func DefaultConfig() Config {
	return Config{Kind: KindOpenAI, Chunks: defaultChunks}
}

// Observed is one request as the server saw it.
type Observed struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	Start        time.Time // arrival
	Canceled     time.Time // when the client's disconnect was seen; zero if not canceled
	Done         time.Time // when the handler finished; zero while running
}

// Server is a mock provider. It is an http.Handler; Start also serves it on
// a listener of its own.
type Server struct {
	cfg      Config
	idPrefix string
	seq      atomic.Uint64

	mu    sync.Mutex // guards ring, total and the Observed values in ring
	ring  []*Observed
	total uint64

	failMu   sync.Mutex
	failSeen map[string]int

	canceled chan Observed

	srvMu sync.Mutex
	srv   *http.Server
}

// Validate reports a Kind the mock cannot speak. Other fields have no
// wrong values: New clamps them.
func (c *Config) Validate() error {
	switch c.Kind {
	case "", KindOpenAI, KindAnthropic, KindGemini, KindOllama, KindAzure, KindBedrock, KindVertex:
		return nil
	}
	return fmt.Errorf("providermock: unsupported kind %q (supported: %s, %s, %s, %s, %s, %s, %s)",
		c.Kind, KindOpenAI, KindAnthropic, KindGemini, KindOllama, KindAzure, KindBedrock, KindVertex)
}

// New returns a Server for cfg. It fails for an unknown Kind.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Kind == "" {
		cfg.Kind = KindOpenAI
	}
	if cfg.Chunks <= 0 {
		cfg.Chunks = defaultChunks
	}
	if cfg.Chunks > maxChunks {
		cfg.Chunks = maxChunks
	}
	if cfg.Latency < 0 {
		cfg.Latency = 0
	}
	if cfg.ChunkDelay < 0 {
		cfg.ChunkDelay = 0
	}
	var seed [6]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("providermock: seed: %w", err)
	}
	return &Server{
		cfg:      cfg,
		idPrefix: hex.EncodeToString(seed[:]),
		ring:     make([]*Observed, maxRecorded),
		failSeen: make(map[string]int),
		canceled: make(chan Observed, canceledBuffer),
	}, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in a
// goroutine. It returns the base URL, such as "http://127.0.0.1:PORT",
// without a trailing "/v1".
func (s *Server) Start(addr string) (baseURL string, err error) {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srv != nil {
		return "", errors.New("providermock: server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("providermock: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	s.srv = srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("providermock: serve: %v", err)
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// Close stops a server started with Start at once, closing its listener and
// every connection. It is a no-op if Start was not called.
func (s *Server) Close() error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// Shutdown stops a server started with Start gracefully: it stops accepting
// and waits for running requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Requests returns a copy of the recorded requests (the last 1,000) in
// arrival order.
func (s *Server) Requests() []Observed {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.total
	if n > maxRecorded {
		n = maxRecorded
	}
	out := make([]Observed, 0, n)
	first := s.total - n
	for i := first; i < s.total; i++ {
		out = append(out, *s.ring[i%maxRecorded])
	}
	return out
}

// Canceled receives an Observed each time a request's client went away
// (its context was canceled, or a write failed) before the handler
// finished. Sends never block: when nobody reads, events beyond the buffer
// (64) are dropped; Requests still shows them.
func (s *Server) Canceled() <-chan Observed { return s.canceled }

// Reset forgets recorded requests, fail_first counters and pending
// cancellation events.
func (s *Server) Reset() {
	s.mu.Lock()
	clear(s.ring)
	s.total = 0
	s.mu.Unlock()
	s.failMu.Lock()
	clear(s.failSeen)
	s.failMu.Unlock()
	for {
		select {
		case <-s.canceled:
		default:
			return
		}
	}
}

// ServeHTTP answers one request in the configured provider's format.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, bodyErr := readBody(r)
	obs := &Observed{
		Method: r.Method,
		Path:   r.URL.Path,
		Header: r.Header.Clone(),
		Body:   body,
		Start:  start,
	}
	s.record(obs)
	rq := &request{s: s, w: w, r: r, ctx: r.Context(), obs: obs, body: body, bodyErr: bodyErr}
	defer rq.finish()
	switch s.cfg.Kind {
	case KindAnthropic:
		s.serveAnthropic(rq)
	case KindGemini:
		s.serveGemini(rq)
	case KindOllama:
		s.serveOllama(rq)
	case KindAzure:
		s.serveAzure(rq)
	case KindBedrock:
		s.serveBedrock(rq)
	case KindVertex:
		s.serveVertex(rq)
	default:
		s.serveOpenAI(rq)
	}
}

func (s *Server) record(obs *Observed) {
	s.mu.Lock()
	s.ring[s.total%maxRecorded] = obs
	s.total++
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// newID returns prefix followed by 24 hex digits unique to this server.
func (s *Server) newID(prefix string) string {
	n := s.seq.Add(1)
	b := make([]byte, 0, len(prefix)+24)
	b = append(b, prefix...)
	b = append(b, s.idPrefix...)
	var d [12]byte
	for i := len(d) - 1; i >= 0; i-- {
		d[i] = hexDigits[n&0xf]
		n >>= 4
	}
	b = append(b, d[:]...)
	return string(b)
}

var errBodyTooLarge = errors.New("request body too large")

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > maxBodyBytes {
		return nil, errBodyTooLarge
	}
	if r.ContentLength > 0 {
		b := make([]byte, r.ContentLength)
		n, err := io.ReadFull(r.Body, b)
		return b[:n], err
	}
	b := make([]byte, 0, 1024)
	lr := io.LimitReader(r.Body, maxBodyBytes+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return b, err
		}
	}
	if len(b) > maxBodyBytes {
		return b[:maxBodyBytes], errBodyTooLarge
	}
	return b, nil
}

// request is the per-request state shared by the handlers.
type request struct {
	s          *Server
	w          http.ResponseWriter
	r          *http.Request
	ctx        context.Context
	obs        *Observed
	body       []byte
	bodyErr    error
	canceledAt time.Time
	rc         *http.ResponseController
	buf        *[]byte
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// buffer returns the request's scratch buffer, emptied.
func (rq *request) buffer() []byte {
	if rq.buf == nil {
		rq.buf = bufPool.Get().(*[]byte)
	}
	return (*rq.buf)[:0]
}

// keep stores b (grown from buffer) so that finish returns it to the pool.
func (rq *request) keep(b []byte) { *rq.buf = b }

func (rq *request) finish() {
	if rq.buf != nil {
		if cap(*rq.buf) <= 1<<20 {
			*rq.buf = (*rq.buf)[:0]
			bufPool.Put(rq.buf)
		}
		rq.buf = nil
	}
	s := rq.s
	s.mu.Lock()
	rq.obs.Done = time.Now()
	if !rq.canceledAt.IsZero() {
		rq.obs.Canceled = rq.canceledAt
	}
	o := *rq.obs
	s.mu.Unlock()
	if !o.Canceled.IsZero() {
		s.logf("providermock: %s %s canceled by the client after %v", o.Method, o.Path, o.Canceled.Sub(o.Start).Round(time.Millisecond))
		select {
		case s.canceled <- o:
		default:
		}
	}
}

func (rq *request) cancel() {
	if rq.canceledAt.IsZero() {
		rq.canceledAt = time.Now()
	}
}

// wait sleeps d unless the client goes away first; it reports whether to go on.
func (rq *request) wait(d time.Duration) bool {
	if d <= 0 {
		if rq.ctx.Err() != nil {
			rq.cancel()
			return false
		}
		return true
	}
	t := time.NewTimer(d)
	select {
	case <-rq.ctx.Done():
		t.Stop()
		rq.cancel()
		return false
	case <-t.C:
		return true
	}
}

var (
	hdrJSON      = []string{"application/json"}
	hdrSSE       = []string{"text/event-stream"}
	hdrNoCache   = []string{"no-cache"}
	hdrZero      = []string{"0"}
	hdrRateLimit = []string{"60"}
)

func (rq *request) setCommonHeaders(h http.Header) {
	if rq.s.cfg.Kind == KindBedrock {
		h["X-Amzn-Requestid"] = []string{rq.s.newID("")}
		return
	}
	if rq.s.cfg.Kind == KindAnthropic {
		h["Request-Id"] = []string{rq.s.newID("req_")} // Anthropic's name for it
		return
	}
	h["X-Request-Id"] = []string{rq.s.newID("req_")}
}

// writeJSON sends a complete JSON body with its length.
func (rq *request) writeJSON(status int, body []byte) {
	h := rq.w.Header()
	rq.setCommonHeaders(h)
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	rq.w.WriteHeader(status)
	if _, err := rq.w.Write(body); err != nil {
		rq.cancel()
	}
}

// writeJSONCut announces the whole body but sends only its first half, then
// aborts the connection: the client sees an unexpected EOF.
func (rq *request) writeJSONCut(body []byte) {
	h := rq.w.Header()
	rq.setCommonHeaders(h)
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(body[:len(body)/2])
	rq.abort()
}

// startStream sends the headers of an SSE response.
func (rq *request) startStream() { rq.startStreamAs(hdrSSE) }

// startStreamAs sends the headers of a streamed response of content type
// ct (SSE, NDJSON, or a JSON array written piece by piece).
func (rq *request) startStreamAs(ct []string) {
	h := rq.w.Header()
	rq.setCommonHeaders(h)
	h["Content-Type"] = ct
	h["Cache-Control"] = hdrNoCache
	rq.w.WriteHeader(http.StatusOK)
	rq.rc = http.NewResponseController(rq.w)
}

// send writes and flushes one event; it reports whether the client is
// still there.
func (rq *request) send(ev []byte) bool {
	if _, err := rq.w.Write(ev); err != nil {
		rq.cancel()
		return false
	}
	if err := rq.rc.Flush(); err != nil {
		rq.cancel()
		return false
	}
	return true
}

// abort flushes what was written and drops the connection without ending
// the response properly.
func (rq *request) abort() {
	if rq.rc == nil {
		rq.rc = http.NewResponseController(rq.w)
	}
	_ = rq.rc.Flush()
	rq.s.logf("providermock: %s %s aborted by cut_after", rq.r.Method, rq.r.URL.Path)
	panic(http.ErrAbortHandler)
}

// directives is the behaviour chosen for one request.
type directives struct {
	raw        string // the directive text, normalised; the fail_first key
	status     int
	retryAfter int // seconds; -1 when not given
	latency    time.Duration
	chunkDelay time.Duration
	silent     time.Duration
	chunks     int
	cutAfter   int // -1 when not given
	errorAfter int // -1 when not given
	toolCall   string
	failFirst  int
}

func (s *Server) baseDirectives() directives {
	return directives{
		retryAfter: -1,
		latency:    s.cfg.Latency,
		chunkDelay: s.cfg.ChunkDelay,
		chunks:     s.cfg.Chunks,
		cutAfter:   -1,
		errorAfter: -1,
	}
}

// applyModel turns model "mock-error-NNN" into status=NNN.
func (d *directives) applyModel(model string) {
	rest, ok := strings.CutPrefix(model, "mock-error-")
	if !ok {
		return
	}
	if n, err := strconv.Atoi(rest); err == nil && n >= 400 && n <= 599 {
		d.status = n
	}
}

// findDirective returns the index of the "#mock" token in text, or -1.
func findDirective(text string) int {
	from := 0
	for {
		i := strings.Index(text[from:], directiveToken)
		if i < 0 {
			return -1
		}
		i += from
		end := i + len(directiveToken)
		if end == len(text) || isSpaceByte(text[end]) {
			return i
		}
		from = end
	}
}

func isSpaceByte(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

// parse applies the directives found in text, if any.
func (d *directives) parse(text string) error {
	i := findDirective(text)
	if i < 0 {
		return nil
	}
	fields := strings.Fields(text[i+len(directiveToken):])
	kept := 0
	for _, f := range fields {
		key, val, ok := strings.Cut(f, "=")
		if !ok || key == "" {
			break
		}
		kept++
		if err := d.set(key, val); err != nil {
			return fmt.Errorf("providermock: invalid directive %q: %v", f, err)
		}
	}
	d.raw = directiveToken + " " + strings.Join(fields[:kept], " ")
	return nil
}

func (d *directives) set(key, val string) error {
	num := func(max int) (int, error) {
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > max {
			return 0, fmt.Errorf("want an integer from 0 to %d", max)
		}
		return n, nil
	}
	ms := func() (time.Duration, error) {
		n, err := num(3_600_000)
		return time.Duration(n) * time.Millisecond, err
	}
	var err error
	switch key {
	case "status":
		var n int
		if n, err = num(599); err == nil && n < 400 {
			err = errors.New("want a status from 400 to 599")
		}
		d.status = n
	case "retry_after":
		d.retryAfter, err = num(86400)
	case "latency_ms":
		d.latency, err = ms()
	case "chunk_delay_ms":
		d.chunkDelay, err = ms()
	case "silent_ms":
		d.silent, err = ms()
	case "chunks":
		d.chunks, err = num(maxChunks)
	case "cut_after":
		d.cutAfter, err = num(maxChunks)
	case "error_after":
		d.errorAfter, err = num(maxChunks)
	case "tool_call":
		if val == "" {
			err = errors.New("want a function name")
		}
		d.toolCall = val
	case "fail_first":
		d.failFirst, err = num(1 << 30)
	}
	return err
}

// failStatus returns the status this request must fail with, or 0. It
// counts fail_first requests.
func (s *Server) failStatus(d *directives) int {
	if d.failFirst <= 0 {
		return d.status
	}
	s.failMu.Lock()
	s.failSeen[d.raw]++
	n := s.failSeen[d.raw]
	s.failMu.Unlock()
	if n > d.failFirst {
		return 0
	}
	if d.status == 0 {
		return http.StatusInternalServerError
	}
	return d.status
}

// admit applies fail_first and latency. When the request must fail it
// calls fail with the status and reports false. Every kind but openai (whose
// proceed predates it) goes through admit, so the directives act alike in
// every format; fail writes the error in the kind's own shape.
func (rq *request) admit(d *directives, fail func(status int)) bool {
	status := rq.s.failStatus(d)
	if !rq.wait(d.latency) {
		return false
	}
	if status != 0 {
		fail(status)
		return false
	}
	return true
}

// retryAfterFor returns the Retry-After seconds to send with an error of
// status, or -1 for none: 429 always carries one (default 1 s), others only
// when retry_after is given.
func (d *directives) retryAfterFor(status int) int {
	if status == http.StatusTooManyRequests && d.retryAfter < 0 {
		return 1
	}
	return d.retryAfter
}

// setRetryAfter sets the Retry-After header for an error of status.
func (rq *request) setRetryAfter(d *directives, status int) int {
	ra := d.retryAfterFor(status)
	if ra >= 0 {
		rq.w.Header()["Retry-After"] = []string{strconv.Itoa(ra)}
	}
	return ra
}

// countWords counts whitespace-separated words.
func countWords(s string) int {
	n := 0
	in := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

// words is the fixed vocabulary of generated answers, cycled in order.
var words = [...]string{
	"Hello", "from", "the", "Meridian", "mock", "provider.", "This", "is",
	"a", "deterministic", "answer", "made", "of", "word-like", "pieces,",
	"used", "by", "tests", "and", "benchmarks.",
}

// pieces[i] is the i-th word with a leading space; the first piece of an
// answer drops the space.
var pieces = func() [len(words)]string {
	var p [len(words)]string
	for i, w := range words {
		p[i] = " " + w
	}
	return p
}()

func piece(i int) string {
	if i == 0 {
		return words[0]
	}
	return pieces[i%len(words)]
}

// Content returns the deterministic answer text made of n content chunks,
// as streamed and plain answers carry it.
func Content(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(piece(i))
	}
	return b.String()
}

// ToolArguments is the arguments JSON of every mock tool call.
const ToolArguments = `{"location":"Paris"}`

// toolFragments is ToolArguments split as a streamed tool call sends it.
var toolFragments = [...]string{`{"`, `location`, `":"`, `Paris`, `"}`}
