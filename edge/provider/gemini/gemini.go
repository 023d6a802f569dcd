// Package gemini is the adapter for Google's Gemini API
// (generativelanguage.googleapis.com, v1beta): generateContent and, for
// streams, streamGenerateContent with alt=sse.
//
// Canonical chat requests are translated into GenerateContentRequest
// bodies and Gemini's answers back into OpenAI-shaped completions and
// chunks. Only chat translates: embeddings and legacy completions are
// refused as unsupported.
//
// The API key travels in the x-goog-api-key header and never in the URL,
// because URLs end up in logs. Error messages built here never contain
// the key or the base URL.
package gemini

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/tidwall/gjson"
)

// Adapter talks to one Gemini provider.
type Adapter struct {
	id     string
	base   string
	key    string
	client *http.Client
	p      table.Provider
}

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	p = p.WithDefaults()
	return &Adapter{
		id:     p.ID,
		base:   strings.TrimRight(p.BaseURL, "/"),
		key:    p.APIKey.Reveal(),
		client: upstream.NewClient(p),
		p:      p,
	}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.client.CloseIdleConnections() }

// endpoint returns the URL of a model's method. Model names are accepted
// bare ("gemini-2.0-flash") or as Gemini names them ("models/…",
// "tunedModels/…"); the name is one escaped path segment either way.
func (a *Adapter) endpoint(model string, stream bool) string {
	collection := "/models/"
	if rest, ok := strings.CutPrefix(model, "models/"); ok {
		model = rest
	} else if rest, ok := strings.CutPrefix(model, "tunedModels/"); ok {
		collection, model = "/tunedModels/", rest
	}
	if stream {
		return a.base + collection + url.PathEscape(model) + ":streamGenerateContent?alt=sse"
	}
	return a.base + collection + url.PathEscape(model) + ":generateContent"
}

// Do implements provider.Provider.
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
		return nil, invalid("model", "no model to ask the upstream for")
	}
	payload, err := encodeRequest(chat, len(req.Body))
	if err != nil {
		return nil, err
	}
	h := make(http.Header, 5)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "meridian-edge")
	if req.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	if a.key != "" {
		h.Set("X-Goog-Api-Key", a.key)
	}
	if req.ID != "" {
		h.Set("X-Request-Id", req.ID)
	}
	call, err := upstream.Send(ctx, a.client, upstream.Request{
		Provider: a.id, Method: http.MethodPost, URL: a.endpoint(model, req.Stream), Header: h, Body: payload,
		Silence: a.p.ChunkTimeout, ParseError: ParseError,
	})
	if err != nil {
		return nil, a.refine(err)
	}
	if req.Stream {
		return &llm.Response{Stream: newStream(call, call.Resp.Body, a.id, model), Upstream: call.Since()}, nil
	}
	b, err := call.ReadAll()
	call.Close(err == nil)
	if err != nil {
		if errors.Is(err, llm.ErrStreamCut) {
			// The body broke off before the client saw anything, so
			// another target may be tried.
			return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + a.id + " broke off its response", Retryable: true, Cause: err}
		}
		return nil, err
	}
	cc, err := decodeResponse(b, model)
	if err != nil {
		return nil, a.named(err)
	}
	return &llm.Response{Completion: cc, Usage: *cc.Usage, Upstream: call.Since()}, nil
}

// Codes ParseError puts in ErrorDetail.Code for refine to act on.
const (
	codeKeyInvalid   = "API_KEY_INVALID"
	codePrecondition = "FAILED_PRECONDITION"
)

// refine corrects the status rules for two Gemini habits: a key that is
// not valid is answered 400 (not 401), and a project the API will not
// serve (billing off, region not served) is answered 400
// FAILED_PRECONDITION. Both are about Meridian's account, not the
// client's request, so they must not reach the client as its own 400;
// another target may well succeed.
func (a *Adapter) refine(err error) error {
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		return err
	}
	switch e.Code {
	case codeKeyInvalid:
		return upstream.StatusError(a.id, http.StatusUnauthorized, http.Header{}, upstream.ErrorDetail{}, e.Cause)
	case codePrecondition:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
			Message:   "upstream provider " + a.id + " cannot serve requests for Meridian's account",
			Retryable: true, Cause: e.Cause}
	}
	return err
}

// named puts the provider's ID into a decoding error's message.
func (a *Adapter) named(err error) error {
	var e *llm.Error
	if errors.As(err, &e) && e.Type == llm.TypeUpstream {
		e.Message = "upstream provider " + a.id + ": " + e.Message
	}
	return err
}

// ParseError reads a Gemini error body:
// {"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}},
// sometimes wrapped in an array. The status becomes the code.
func ParseError(b []byte) upstream.ErrorDetail {
	r := gjson.ParseBytes(b)
	if r.IsArray() {
		r = r.Get("0")
	}
	e := r.Get("error")
	d := upstream.ErrorDetail{Message: e.Get("message").Str, Code: e.Get("status").Str}
	e.Get("details").ForEach(func(_, v gjson.Result) bool {
		if v.Get("reason").Str == codeKeyInvalid {
			d.Code = codeKeyInvalid
			return false
		}
		return true
	})
	return d
}
