// Package anthropic is the adapter for Anthropic's Messages API. It
// translates the canonical, OpenAI-shaped chat request into a Messages
// request and the Messages answer, plain or streamed, back into a
// canonical completion or canonical chunks.
//
// Anthropic has no embeddings or legacy completions; those are refused
// before anything is sent. The provider key goes into the x-api-key
// header and nowhere else: messages built here may reach a client.
package anthropic

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/tidwall/gjson"
)

// apiVersion is the anthropic-version header. Every field this adapter
// writes and reads exists in this version; newer behaviour is opted into
// by Anthropic with beta headers, which Meridian does not send.
const apiVersion = "2023-06-01"

// Adapter talks to one Anthropic Messages provider.
type Adapter struct {
	id      string
	url     string
	key     string
	silence time.Duration
	client  *http.Client
}

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	p = p.WithDefaults()
	return &Adapter{
		id:      p.ID,
		url:     strings.TrimRight(p.BaseURL, "/") + "/messages",
		key:     p.APIKey.Reveal(),
		silence: p.ChunkTimeout,
		client:  upstream.NewClient(p),
	}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.client.CloseIdleConnections() }

// Do sends req to the Messages endpoint, asking for upstreamModel (the
// client's model name when empty). Errors are *llm.Error, or ctx's error
// when the client went away.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if req.Op != llm.OpChat {
		return nil, upstream.Unsupported(a.id, req.Op)
	}
	chat, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	model := upstreamModel
	if model == "" {
		model = req.Model
	}
	if model == "" {
		model = chat.Model
	}
	payload, err := encodeRequest(chat, model, req.Stream)
	if err != nil {
		return nil, err
	}
	h := make(http.Header, 6)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "meridian-edge")
	h.Set("Anthropic-Version", apiVersion)
	if req.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	if a.key != "" {
		h.Set("X-Api-Key", a.key)
	}
	if req.ID != "" {
		h.Set("X-Request-Id", req.ID)
	}
	call, err := upstream.Send(ctx, a.client, upstream.Request{
		Provider: a.id, Method: http.MethodPost, URL: a.url, Header: h, Body: payload,
		Silence: a.silence, ParseError: parseError,
	})
	if err != nil {
		return nil, err
	}
	if req.Stream {
		return &llm.Response{Stream: newStream(a.id, call, call.Resp.Body, model), Upstream: call.Since()}, nil
	}
	b, err := call.ReadAll()
	call.Close(err == nil)
	if err != nil {
		if errors.Is(err, llm.ErrStreamCut) {
			// Nothing reached the client yet, so another target may
			// still serve the request.
			return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + a.id + " broke off its response", Retryable: true, Cause: err}
		}
		return nil, err
	}
	took := call.Since()
	c, err := decodeMessage(a.id, b, model, time.Now().Unix())
	if err != nil {
		return nil, err
	}
	return &llm.Response{Completion: c, Usage: *c.Usage, Upstream: took}, nil
}

// parseError reads Anthropic's error body,
// {"type":"error","error":{"type":"rate_limit_error","message":"..."}}.
// upstream.StatusError turns Type "overloaded_error" into a 503 even
// when a proxy in front of Anthropic changed the 529 status.
func parseError(b []byte) upstream.ErrorDetail {
	e := gjson.GetBytes(b, "error")
	return upstream.ErrorDetail{Type: e.Get("type").Str, Message: e.Get("message").Str}
}

// eventError maps an error Anthropic reported inside a 200 answer: an
// "error" event mid-stream, or an error body sent with status 200. An
// overload is worth retrying elsewhere; other errors are passed on as a
// failure of the upstream, with Anthropic's type as the code; those
// Anthropic would have answered with a 429 or 5xx are retryable, as
// upstream.StatusError makes them when they come as a status.
func eventError(provider string, e gjson.Result) *llm.Error {
	typ, msg := e.Get("type").Str, e.Get("message").Str
	if typ == llm.TypeOverloaded {
		return &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded,
			Message: "upstream provider " + provider + " is overloaded", Retryable: true}
	}
	if msg == "" {
		msg = "unknown error"
	}
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: typ,
		Message:   "upstream provider " + provider + " reported an error: " + msg,
		Retryable: typ == "api_error" || typ == llm.TypeRateLimit}
}
