// Package upstream is the HTTP plumbing every provider adapter shares:
// a pooled client with the provider's timeouts, one call in flight with
// its silence watchdog, and the mapping of upstream failures to
// *llm.Error. It knows no wire format; adapters pass in what they parse.
//
// Messages built here never contain a provider key or URL: a message may
// reach a client. Causes (for logs) may name hosts, never keys.
package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// MaxResponseBytes bounds a non-streamed upstream response body.
const MaxResponseBytes = 64 << 20

// NewClient returns a pooled HTTP client with p's connect and first-byte
// timeouts. HTTP/2 is used where the upstream offers it over TLS.
func NewClient(p table.Provider) *http.Client {
	p = p.WithDefaults()
	dialer := &net.Dialer{Timeout: p.ConnectTimeout, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil, // base URLs are set by operators; never route through env proxies implicitly
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          p.MaxIdleConns,
		MaxIdleConnsPerHost:   p.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   p.ConnectTimeout,
		ResponseHeaderTimeout: p.FirstByteTimeout,
		ExpectContinueTimeout: time.Second,
		// Compression would make the transport buffer SSE frames and
		// cost CPU on both ends for small JSON bodies.
		DisableCompression: true,
	}}
}

// ErrorDetail is what an adapter reads from an upstream error body.
type ErrorDetail struct {
	// Message is the upstream's own explanation. It is shown to the
	// client only for 4xx answers about the request itself.
	Message string
	// Code and Param are passed on with such answers, when known.
	Code, Param string
	// Type is the upstream's error type, such as Anthropic's
	// "overloaded_error"; "overloaded_error" maps to an overload.
	Type string
}

// Request describes one upstream call.
type Request struct {
	// Provider is the provider ID, used in messages.
	Provider string
	// Method and URL of the call; the URL never reaches a message.
	Method, URL string
	// Header holds auth and content headers.
	Header http.Header
	// Body is the encoded request.
	Body []byte
	// Silence bounds the wait for a non-streamed body and every gap
	// between streamed events (the provider's chunk timeout).
	Silence time.Duration
	// ParseError reads an error body. Nil reads nothing.
	ParseError func(body []byte) ErrorDetail
	// Sign, when set, authenticates the built request just before it
	// is sent: a bearer token that expires, or a signature over the
	// method, URL, headers and body (SigV4). Its error means Meridian
	// holds no usable credential: a 502 that another target may avoid.
	Sign Signer
}

// Signer authenticates one request; body is the request's body, which a
// signature covers. It may set headers on req; req.Header is the
// request's own copy.
type Signer func(ctx context.Context, req *http.Request, body []byte) error

// Call is one upstream request whose answer was 200.
type Call struct {
	Resp *http.Response
	// Start is when the request was sent.
	Start time.Time

	provider string
	ctx      context.Context
	cancel   context.CancelCauseFunc
	silence  time.Duration
	timer    *time.Timer
	last     atomic.Int64 // unix nanoseconds of the last Touch
	once     sync.Once
}

var errSilence = errors.New("upstream was silent for longer than the chunk timeout")

// Send makes the call. A non-200 answer is read and mapped to an
// *llm.Error; so are connection failures and timeouts. When ctx ends
// first, ctx's error is returned as it is.
func Send(ctx context.Context, c *http.Client, r Request) (*Call, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	hreq, err := http.NewRequestWithContext(ctx, r.Method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		cancel(nil)
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream request could not be built", Cause: err}
	}
	hreq.Header = r.Header
	if r.Sign != nil {
		if err := r.Sign(ctx, hreq, r.Body); err != nil {
			cancel(nil)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true, Cause: err,
				Message: "Meridian holds no usable credential for upstream provider " + r.Provider}
		}
	}
	call := &Call{provider: r.Provider, ctx: ctx, cancel: cancel, silence: r.Silence, Start: time.Now()}
	resp, err := c.Do(hreq)
	if err != nil {
		err = call.mapErr(err) // before cancel, which sets a cause
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel(nil)
		var d ErrorDetail
		if r.ParseError != nil {
			d = r.ParseError(b)
		}
		return nil, StatusError(r.Provider, resp.StatusCode, resp.Header, d,
			fmt.Errorf("upstream %s answered %d: %.512s", r.Provider, resp.StatusCode, b))
	}
	call.Resp = resp
	call.last.Store(time.Now().UnixNano())
	check := func() {
		idle := time.Since(time.Unix(0, call.last.Load()))
		if idle >= call.silence {
			cancel(errSilence)
			return
		}
		call.timer.Reset(call.silence - idle)
	}
	call.timer = time.AfterFunc(time.Duration(math.MaxInt64), check)
	call.timer.Reset(call.silence)
	return call, nil
}

// Since is the time from sending the request until now.
func (c *Call) Since() time.Duration { return time.Since(c.Start) }

// Touch records that the upstream sent something, resetting the
// silence watchdog. It costs a clock read, not a timer reset.
func (c *Call) Touch() { c.last.Store(time.Now().UnixNano()) }

// ReadAll reads a non-streamed body, up to MaxResponseBytes.
func (c *Call) ReadAll() ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(c.Resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, c.ReadErr(err)
	}
	if len(b) > MaxResponseBytes {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream response too large", Retryable: true}
	}
	return b, nil
}

// ReadErr maps an error met while reading the body: the watchdog's
// timeout, the client going away (returned as ctx's error), or an
// upstream that broke off (llm.ErrStreamCut).
func (c *Call) ReadErr(err error) error {
	if context.Cause(c.ctx) != nil {
		return c.mapErr(err)
	}
	return fmt.Errorf("%w: %v", llm.ErrStreamCut, err)
}

// Close releases the call. drained says the upstream finished its
// answer: the rest of the body is read so the connection goes back to
// the pool instead of being closed, and the next request skips a
// handshake. Close is safe to call more than once.
func (c *Call) Close(drained bool) {
	c.once.Do(func() {
		c.timer.Stop()
		if drained {
			io.CopyN(io.Discard, c.Resp.Body, 4<<10)
		}
		c.Resp.Body.Close()
		c.cancel(nil)
	})
}

// mapErr maps a failure to reach or read the upstream.
func (c *Call) mapErr(err error) error {
	switch cause := context.Cause(c.ctx); {
	case errors.Is(cause, errSilence):
		return &llm.Error{Status: http.StatusGatewayTimeout, Type: llm.TypeTimeout, Message: "upstream provider " + c.provider + " stopped sending", Retryable: true, Cause: cause}
	case cause != nil:
		return cause // the client went away
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &llm.Error{Status: http.StatusGatewayTimeout, Type: llm.TypeTimeout, Message: "upstream provider " + c.provider + " timed out", Retryable: true, Cause: err}
	}
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "could not reach upstream provider " + c.provider, Retryable: true, Cause: err}
}

// StatusError maps a non-200 upstream answer. The rules, for every
// wire format alike:
//   - 429: 429 rate_limit_error with Retry-After, retryable;
//   - 529 or an overloaded type: 503 overloaded_error, retryable;
//   - other 5xx: 502, message redacted, retryable;
//   - 401, 403: 502 (Meridian's credential was refused, not the
//     client's), retryable on another target;
//   - 404: 502 (the route names a model the upstream lacks), retryable;
//   - 413: 413;
//   - other 4xx: 400 with the upstream's message, which is about the
//     request and what the client needs to fix it.
func StatusError(provider string, status int, h http.Header, d ErrorDetail, cause error) *llm.Error {
	switch {
	case status == http.StatusTooManyRequests:
		return &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "rate_limit_exceeded",
			Message:    "upstream provider " + provider + " is rate limiting requests",
			RetryAfter: RetryAfter(h.Get("Retry-After")), Retryable: true, Cause: cause}
	case status == 529 || d.Type == llm.TypeOverloaded:
		return &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded,
			Message:    "upstream provider " + provider + " is overloaded",
			RetryAfter: RetryAfter(h.Get("Retry-After")), Retryable: true, Cause: cause}
	case status >= 500:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s failed (status %d)", provider, status), Retryable: true, Cause: cause}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s refused Meridian's credentials (status %d)", provider, status), Retryable: true, Cause: cause}
	case status == http.StatusNotFound:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s does not serve this model", provider), Retryable: true, Cause: cause}
	case status == http.StatusRequestEntityTooLarge:
		return &llm.Error{Status: status, Type: llm.TypeInvalidRequest, Message: "request too large for upstream provider " + provider, Cause: cause}
	}
	msg := d.Message
	if msg == "" {
		msg = fmt.Sprintf("upstream provider %s rejected the request (status %d)", provider, status)
	}
	return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Code: d.Code, Param: d.Param, Message: msg, Cause: cause}
}

// RetryAfter parses a Retry-After header: seconds or an HTTP date.
func RetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// Unsupported is the error for an operation a provider's format lacks,
// such as embeddings on Anthropic.
func Unsupported(provider string, op llm.Op) *llm.Error {
	return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Code: llm.CodeUnsupported,
		Message: fmt.Sprintf("provider %s does not support %s requests", provider, op)}
}

// Style is how a provider's API expects its requests: where the key goes
// and what a stream is accepted as.
type Style struct {
	// KeyHeader carries the key, after KeyPrefix ("Authorization",
	// "Bearer "); no header is sent when the provider has no key.
	KeyHeader, KeyPrefix string
	// StreamAccept is the Accept header of a streamed request.
	StreamAccept string
	// Fixed are headers every request carries, as name, value pairs.
	Fixed []string
	// ParseError reads an error body.
	ParseError func(body []byte) ErrorDetail
	// Sign, when set, authenticates every request (see Request.Sign);
	// the key header is still set when the provider has a key.
	Sign Signer
}

// Provider is what every adapter keeps of the provider it talks to: its
// ID, base URL, key, chunk timeout and connection pool. The key is only
// ever written into the style's header.
type Provider struct {
	id      string
	base    string
	key     string
	silence time.Duration
	client  *http.Client
	style   Style
	// plain and stream are the headers every request carries, for plain
	// and streamed answers; Header copies them.
	plain, stream http.Header
}

// NewProvider returns the provider p, whose requests take style s. p
// must have passed table validation.
func NewProvider(p table.Provider, s Style) Provider {
	p = p.WithDefaults()
	pr := Provider{
		id:      p.ID,
		base:    strings.TrimRight(p.BaseURL, "/"),
		key:     p.APIKey.Reveal(),
		silence: p.ChunkTimeout,
		client:  NewClient(p),
		style:   s,
	}
	pr.plain, pr.stream = pr.template(false), pr.template(true)
	return pr
}

func (p *Provider) template(stream bool) http.Header {
	h := make(http.Header, 6)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "meridian-edge")
	for i := 0; i+1 < len(p.style.Fixed); i += 2 {
		h.Set(p.style.Fixed[i], p.style.Fixed[i+1])
	}
	if stream {
		h.Set("Accept", p.style.StreamAccept)
	} else {
		h.Set("Accept", "application/json")
	}
	if p.key != "" {
		h.Set(p.style.KeyHeader, p.style.KeyPrefix+p.key)
	}
	return h
}

// ID is the provider's ID.
func (p *Provider) ID() string { return p.id }

// Base is the base URL, without a trailing slash.
func (p *Provider) Base() string { return p.base }

// Close releases idle connections.
func (p *Provider) Close() { p.client.CloseIdleConnections() }

// Header returns the headers of one request: JSON in, the style's
// stream type or JSON out, the key and the request ID. The values are
// shared with every other request's and must not be written to; net/http
// only reads them.
func (p *Provider) Header(stream bool, requestID string) http.Header {
	t := p.plain
	if stream {
		t = p.stream
	}
	h := make(http.Header, len(t)+1)
	for k, v := range t {
		h[k] = v
	}
	if requestID != "" {
		h["X-Request-Id"] = []string{requestID}
	}
	return h
}

// Send posts payload to url (under Base) for request req; stream asks
// for a streamed answer.
func (p *Provider) Send(ctx context.Context, req *llm.Request, stream bool, url string, payload []byte) (*Call, error) {
	return Send(ctx, p.client, Request{
		Provider: p.id, Method: http.MethodPost, URL: url, Header: p.Header(stream, req.ID), Body: payload,
		Silence: p.silence, ParseError: p.style.ParseError, Sign: p.style.Sign,
	})
}

// ReadAll reads a non-streamed answer and releases the call. A body that
// broke off is a retryable 502: nothing reached the client yet, so
// another target may still serve the request.
func (p *Provider) ReadAll(call *Call) ([]byte, error) {
	b, err := call.ReadAll()
	call.Close(err == nil)
	if errors.Is(err, llm.ErrStreamCut) {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + p.id + " broke off its response", Retryable: true, Cause: err}
	}
	return b, err
}

// Client is the provider's HTTP client, for benchmarks that swap its
// transport.
func (p *Provider) Client() *http.Client { return p.client }
