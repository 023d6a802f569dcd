// Package openai is the adapter for OpenAI-compatible upstreams: OpenAI
// itself and every server that copies its API (Mistral, DeepSeek, Groq,
// Together, vLLM, TGI, Ollama's /v1, the project's mock provider).
//
// A request that arrived in OpenAI's format is forwarded byte for byte,
// with only its model name changed, so fields Meridian does not know still
// reach the upstream. Responses come back unparsed except for the few
// fields the gateway needs (usage, the end of a stream).
//
// Error messages built here never contain the provider key or base URL.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/meridian-mesh/meridian/shared/sse"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// MaxResponseBytes bounds a non-streamed upstream response body.
const MaxResponseBytes = 64 << 20

// Adapter talks to one OpenAI-compatible provider.
type Adapter struct {
	id      string
	base    string
	key     string
	client  *http.Client
	timeout table.Provider // only the timeout fields are read
}

// errChunkTimeout is the cause set when an upstream stays silent past
// its chunk timeout. The first-byte timeout is the transport's
// ResponseHeaderTimeout, which surfaces as a net.Error timeout.
var errChunkTimeout = errors.New("upstream was silent for longer than the chunk timeout")

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	p = p.WithDefaults()
	dialer := &net.Dialer{Timeout: p.ConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
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
	}
	return &Adapter{
		id:      p.ID,
		base:    strings.TrimRight(p.BaseURL, "/"),
		key:     p.APIKey.Reveal(),
		client:  &http.Client{Transport: tr},
		timeout: p,
	}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.client.CloseIdleConnections() }

func path(op llm.Op) string {
	switch op {
	case llm.OpCompletion:
		return "/completions"
	case llm.OpEmbedding:
		return "/embeddings"
	}
	return "/chat/completions"
}

// body returns the upstream request body: the client's own bytes with the
// model renamed and, for streams, usage reporting switched on so the
// gateway can count tokens even when the client did not ask for them.
func body(req *llm.Request, upstreamModel string) (b []byte, stripUsage bool, err error) {
	b = req.Body
	if b == nil {
		if req.Chat == nil {
			return nil, false, errors.New("request has neither a body nor a chat request")
		}
		if b, err = json.Marshal(req.Chat); err != nil {
			return nil, false, err
		}
		if req.Model != req.Chat.Model && upstreamModel == "" {
			upstreamModel = req.Model
		}
	}
	if upstreamModel != "" && upstreamModel != req.Model {
		if b, err = sjson.SetBytes(b, "model", upstreamModel); err != nil {
			return nil, false, err
		}
	}
	if req.Stream && !req.IncludeUsage && req.Op != llm.OpEmbedding {
		if b, err = sjson.SetBytes(b, "stream_options.include_usage", true); err != nil {
			return nil, false, err
		}
		stripUsage = true
	}
	return b, stripUsage, nil
}

// Do implements provider.Provider.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	payload, stripUsage, err := body(req, upstreamModel)
	if err != nil {
		return nil, &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "request could not be encoded for the upstream", Cause: err}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+path(req.Op), bytes.NewReader(payload))
	if err != nil {
		cancel(nil)
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream request could not be built", Cause: err}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "meridian-edge")
	if req.Stream {
		hreq.Header.Set("Accept", "text/event-stream")
	} else {
		hreq.Header.Set("Accept", "application/json")
	}
	if a.key != "" {
		hreq.Header.Set("Authorization", "Bearer "+a.key)
	}
	if req.ID != "" {
		hreq.Header.Set("X-Request-Id", req.ID)
	}

	start := time.Now()
	resp, err := a.client.Do(hreq)
	if err != nil {
		err = a.transportError(ctx, err) // before cancel, which sets a cause
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel(nil)
		defer resp.Body.Close()
		return nil, a.statusError(resp)
	}

	if !req.Stream {
		// The chunk timeout bounds the wait for the whole body.
		timer := time.AfterFunc(a.timeout.ChunkTimeout, func() { cancel(errChunkTimeout) })
		defer cancel(nil)
		defer timer.Stop()
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
		if err != nil {
			if context.Cause(ctx) == nil {
				// The body broke off: nothing was sent to the client
				// yet, so another target may be tried.
				return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + a.id + " broke off its response", Retryable: true, Cause: err}
			}
			return nil, a.transportError(ctx, err)
		}
		if len(b) > MaxResponseBytes {
			return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream response too large", Retryable: true}
		}
		out := &llm.Response{Body: b, Upstream: time.Since(start)}
		if u := gjson.GetBytes(b, "usage"); u.IsObject() {
			out.Usage = parseUsage(u)
		}
		return out, nil
	}
	st := &stream{
		ctx:        ctx,
		cancel:     cancel,
		timeout:    a.timeout.ChunkTimeout,
		body:       resp.Body,
		r:          sse.NewReader(resp.Body),
		stripUsage: stripUsage,
		adapter:    a,
	}
	st.watchSilence()
	return &llm.Response{Stream: st, Upstream: time.Since(start)}, nil
}

func parseUsage(u gjson.Result) llm.Usage {
	return llm.Usage{
		PromptTokens:     int(u.Get("prompt_tokens").Int()),
		CompletionTokens: int(u.Get("completion_tokens").Int()),
		TotalTokens:      int(u.Get("total_tokens").Int()),
	}
}

// transportError maps a failure to reach or read the upstream. It keeps
// the cause for logs; the message names neither host nor URL.
func (a *Adapter) transportError(ctx context.Context, err error) error {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errChunkTimeout):
		return &llm.Error{Status: http.StatusGatewayTimeout, Type: llm.TypeTimeout, Message: "upstream provider " + a.id + " stopped sending", Retryable: true, Cause: cause}
	case cause != nil:
		return cause // the client went away
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &llm.Error{Status: http.StatusGatewayTimeout, Type: llm.TypeTimeout, Message: "upstream provider " + a.id + " timed out", Retryable: true, Cause: err}
	}
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "could not reach upstream provider " + a.id, Retryable: true, Cause: err}
}

// statusError maps a non-200 upstream answer.
func (a *Adapter) statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := gjson.GetBytes(b, "error")
	msg := e.Get("message").String()
	if msg == "" && e.Type == gjson.String {
		msg = e.String()
	}
	cause := fmt.Errorf("upstream %s answered %d: %.512s", a.id, resp.StatusCode, b)
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		return &llm.Error{
			Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: "rate_limit_exceeded",
			Message:    "upstream provider " + a.id + " is rate limiting requests",
			RetryAfter: retryAfter(resp.Header.Get("Retry-After")), Retryable: true, Cause: cause,
		}
	case code >= 500:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s failed (status %d)", a.id, code), Retryable: true, Cause: cause}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// The client's key is not at fault: Meridian's own credential
		// for the provider was refused. Another target may still work.
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s refused Meridian's credentials (status %d)", a.id, code), Retryable: true, Cause: cause}
	case code == http.StatusNotFound:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s does not serve this model", a.id), Retryable: true, Cause: cause}
	case code == http.StatusRequestEntityTooLarge:
		return &llm.Error{Status: code, Type: llm.TypeInvalidRequest, Message: "request too large for upstream provider " + a.id, Cause: cause}
	default:
		// Any other 4xx is about the request itself: tell the client
		// what the upstream said, which is what they need to fix it.
		if msg == "" {
			msg = fmt.Sprintf("upstream provider %s rejected the request (status %d)", a.id, code)
		}
		return &llm.Error{
			Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest,
			Code: e.Get("code").String(), Param: e.Get("param").String(),
			Message: msg, Cause: cause,
		}
	}
}

func retryAfter(v string) time.Duration {
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

// usageNull ends every chunk of a stream whose usage reporting is on.
var (
	usageNull = []byte(`,"usage":null}`)
	usageKey  = []byte(`"usage"`)
)

// stream reads an OpenAI-format SSE stream.
type stream struct {
	ctx        context.Context
	cancel     context.CancelCauseFunc
	timeout    time.Duration
	body       io.ReadCloser
	r          *sse.Reader
	stripUsage bool
	adapter    *Adapter

	usage    llm.Usage
	hasUsage bool
	done     bool
	once     sync.Once
	timer    *time.Timer
	lastRead atomic.Int64 // unix nanoseconds of the last event
}

// watchSilence cancels the upstream request when no event arrives for
// the chunk timeout. Next records each event's time; the timer re-arms
// itself for the rest of the interval, so the hot path never resets it.
func (s *stream) watchSilence() {
	s.lastRead.Store(time.Now().UnixNano())
	var check func()
	check = func() {
		idle := time.Since(time.Unix(0, s.lastRead.Load()))
		if idle >= s.timeout {
			s.cancel(errChunkTimeout)
			return
		}
		s.timer.Reset(s.timeout - idle)
	}
	s.timer = time.AfterFunc(time.Duration(math.MaxInt64), check)
	s.timer.Reset(s.timeout)
}

var _ llm.Stream = (*stream)(nil)

// Next implements llm.Stream.
func (s *stream) Next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		ev, err := s.r.Next()
		if err != nil {
			if cause := context.Cause(s.ctx); cause != nil {
				return nil, s.adapter.transportError(s.ctx, err)
			}
			return nil, fmt.Errorf("%w: %v", llm.ErrStreamCut, err)
		}
		s.lastRead.Store(time.Now().UnixNano())
		if len(ev.Data) == 6 && string(ev.Data) == "[DONE]" {
			s.done = true
			return nil, io.EOF
		}
		data := ev.Data
		if bytes.HasSuffix(data, usageNull) {
			if s.stripUsage {
				// Usage reporting was switched on for the gateway, not
				// the client: give the client the chunk it would have had.
				data = append(data[:len(data)-len(usageNull)], '}')
			}
		} else if !bytes.Contains(data, usageKey) {
			// The common chunk: nothing to read.
		} else if u := gjson.GetBytes(data, "usage"); u.IsObject() {
			s.usage, s.hasUsage = parseUsage(u), true
			if s.stripUsage && gjson.GetBytes(data, "choices.#").Int() == 0 {
				continue // the client did not ask for the usage chunk
			}
		}
		return data, nil
	}
}

// Buffered implements llm.Buffered.
func (s *stream) Buffered() int { return s.r.Buffered() }

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) { return s.usage, s.hasUsage }

// Close implements llm.Stream.
func (s *stream) Close() error {
	s.once.Do(func() {
		s.timer.Stop()
		if s.done {
			// Read the body's end (after [DONE] only the chunked
			// terminator is left) so the connection goes back to the
			// pool instead of being closed: the next request then
			// skips a TCP (and TLS) handshake.
			io.CopyN(io.Discard, s.body, 4<<10)
		}
		s.body.Close()
		s.cancel(nil)
	})
	return nil
}
