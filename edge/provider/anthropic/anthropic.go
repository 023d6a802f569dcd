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
	"net/http"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
)

// apiVersion is the anthropic-version header. Every field this adapter
// writes and reads exists in this version; newer behaviour is opted into
// by Anthropic with beta headers, which Meridian does not send.
const apiVersion = "2023-06-01"

// Adapter talks to one Anthropic Messages provider.
type Adapter struct {
	up upstream.Provider
	// url, when set, is the endpoint of a model (Vertex AI's
	// rawPredict); the model then goes in the URL and the body carries
	// vertexVersion instead.
	url func(base, model string, stream bool) string
}

// vertexVersion is the anthropic_version a body sent to Vertex AI
// carries in place of a model and the anthropic-version header.
const vertexVersion = "vertex-2023-10-16"

// NewVertex returns an adapter for Claude models on Google Vertex AI:
// Messages bodies without a model, with anthropic_version, posted to
// url's rawPredict or streamRawPredict endpoint, authenticated by sign
// (an OAuth bearer token). The answers are Anthropic's own.
func NewVertex(p table.Provider, sign upstream.Signer, url func(base, model string, stream bool) string) *Adapter {
	p.APIKey = "" // the bearer token comes from sign
	s := upstream.Style{StreamAccept: "text/event-stream", ParseError: parseErrorVertex, Sign: sign}
	return &Adapter{up: upstream.NewProvider(p, s), url: url}
}

// parseErrorVertex reads an error from Vertex AI in front of Claude:
// Google's shape for its own refusals, Anthropic's for the model's.
func parseErrorVertex(b []byte) upstream.ErrorDetail {
	e := readError(b)
	if e.message != "" || e.typ != "" {
		return upstream.ErrorDetail{Type: e.typ, Message: e.message}
	}
	return upstream.ErrorDetail{Message: e.message, Code: e.status}
}

// endpoint is the URL a request for model goes to.
func (a *Adapter) endpoint(model string, stream bool) string {
	if a.url != nil {
		return a.url(a.up.Base(), model, stream)
	}
	return a.up.Base() + "/messages"
}

// vertexBody turns a Messages body that begins with {"model":"…", as
// encodeRequest writes it, into Vertex AI's: the model is in the URL.
func vertexBody(payload []byte, model string) []byte {
	prefix := len(`{"model":`) + len(llm.AppendJSONString(nil, model))
	out := make([]byte, 0, len(payload)+16)
	out = append(out, `{"anthropic_version":"`+vertexVersion+`"`...)
	return append(out, payload[prefix:]...)
}

var style = upstream.Style{KeyHeader: "X-Api-Key", StreamAccept: "text/event-stream",
	Fixed: []string{"Anthropic-Version", apiVersion}, ParseError: parseError}

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	return &Adapter{up: upstream.NewProvider(p, style)}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.up.Close() }

// Do sends req to the Messages endpoint, asking for upstreamModel (the
// client's model name when empty). Errors are *llm.Error, or ctx's error
// when the client went away.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if req.Op == llm.OpCountTokens {
		return a.countTokens(ctx, req, req.UpstreamModel(upstreamModel))
	}
	if req.Op != llm.OpChat {
		return nil, upstream.Unsupported(a.up.ID(), req.Op)
	}
	if req.NativeFormat == llm.FormatAnthropic && req.Native != nil {
		return a.passthrough(ctx, req, req.UpstreamModel(upstreamModel))
	}
	chat, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	model := req.UpstreamModel(upstreamModel)
	payload, err := encodeRequest(chat, model, req.Stream)
	if err != nil {
		return nil, err
	}
	if a.url != nil {
		payload = vertexBody(payload, model)
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.endpoint(model, req.Stream), payload)
	if err != nil {
		return nil, err
	}
	if req.Stream {
		return &llm.Response{Stream: newStream(a.up.ID(), call, call.Resp.Body, model), Upstream: call.Since()}, nil
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
		return nil, err
	}
	took := call.Since()
	c, err := decodeMessage(a.up.ID(), b, model, time.Now().Unix())
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
	e := readError(b)
	return upstream.ErrorDetail{Type: e.typ, Message: e.message}
}

// apiError is the error object of an error body or event: Anthropic's
// type and message, or Google's status and message.
type apiError struct {
	typ, message, status string
}

// read reads an error object; any other value is skipped. The strings
// are copies: an error outlives the buffer it was read from (the SSE
// reader reuses its own).
func (e *apiError) read(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			e.typ = strings.Clone(s.OptStr())
		case "message":
			e.message = strings.Clone(s.OptStr())
		case "status":
			e.status = strings.Clone(s.OptStr())
		}
		return true
	})
}

// readError reads the error object of an error body. The walk stops
// there: what follows it does not matter, not even a syntax error.
func readError(b []byte) apiError {
	var e apiError
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		return e
	}
	s.Object(func(k []byte) bool {
		if string(k) != "error" {
			return true
		}
		e.read(s)
		return false
	})
	return e
}

// eventError maps an error Anthropic reported inside a 200 answer: an
// "error" event mid-stream, or an error body sent with status 200. An
// overload is worth retrying elsewhere; other errors are passed on as a
// failure of the upstream, with Anthropic's type as the code; those
// Anthropic would have answered with a 429 or 5xx are retryable, as
// upstream.StatusError makes them when they come as a status.
func eventError(provider string, e apiError) *llm.Error {
	typ, msg := e.typ, e.message
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
