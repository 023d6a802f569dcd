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

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Adapter talks to one Gemini provider.
type Adapter struct {
	up upstream.Provider
	// url, when set, is the endpoint of a model's method (Vertex AI's
	// publishers/google/models/…); nil means the Gemini API's.
	url func(base, model string, stream bool) string
}

// NewVertex returns an adapter for Gemini models on Google Vertex AI:
// the same bodies and answers as the Gemini API, at url's endpoints,
// authenticated by sign (an OAuth bearer token) instead of a key.
func NewVertex(p table.Provider, sign upstream.Signer, url func(base, model string, stream bool) string) *Adapter {
	p.APIKey = ""
	s := style
	s.Sign = sign
	return &Adapter{up: upstream.NewProvider(p, s), url: url}
}

var style = upstream.Style{KeyHeader: "X-Goog-Api-Key", StreamAccept: "text/event-stream", ParseError: ParseError}

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	return &Adapter{up: upstream.NewProvider(p, style)}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.up.Close() }

// endpoint returns the URL of a model's method. Model names are accepted
// bare ("gemini-2.0-flash") or as Gemini names them ("models/…",
// "tunedModels/…"); the name is one escaped path segment either way.
func (a *Adapter) endpoint(model string, stream bool) string {
	if a.url != nil {
		return a.url(a.up.Base(), model, stream)
	}
	collection := "/models/"
	if rest, ok := strings.CutPrefix(model, "models/"); ok {
		model = rest
	} else if rest, ok := strings.CutPrefix(model, "tunedModels/"); ok {
		collection, model = "/tunedModels/", rest
	}
	if stream {
		return a.up.Base() + collection + url.PathEscape(model) + ":streamGenerateContent?alt=sse"
	}
	return a.up.Base() + collection + url.PathEscape(model) + ":generateContent"
}

// Do implements provider.Provider.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if req.Op != llm.OpChat {
		return nil, upstream.Unsupported(a.up.ID(), req.Op)
	}
	chat, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	model := req.UpstreamModel(upstreamModel)
	if model == "" {
		return nil, invalid("model", "no model to ask the upstream for")
	}
	payload, err := encodeRequest(chat, len(req.Body))
	if err != nil {
		return nil, err
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.endpoint(model, req.Stream), payload)
	if err != nil {
		return nil, a.refine(err)
	}
	if req.Stream {
		return &llm.Response{Stream: newStream(call, call.Resp.Body, a.up.ID(), model), Upstream: call.Since()}, nil
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
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
		return upstream.StatusError(a.up.ID(), http.StatusUnauthorized, http.Header{}, upstream.ErrorDetail{}, e.Cause)
	case codePrecondition:
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
			Message:   "upstream provider " + a.up.ID() + " cannot serve requests for Meridian's account",
			Retryable: true, Cause: e.Cause}
	}
	return err
}

// named puts the provider's ID into a decoding error's message.
func (a *Adapter) named(err error) error {
	var e *llm.Error
	if errors.As(err, &e) && e.Type == llm.TypeUpstream {
		e.Message = "upstream provider " + a.up.ID() + ": " + e.Message
	}
	return err
}

// ParseError reads a Gemini error body:
// {"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}},
// sometimes wrapped in an array. The status becomes the code. The body
// may be anything (a proxy's HTML page, a cut answer): what was read
// before the first syntax error counts, and the rest is ignored.
func ParseError(b []byte) upstream.ErrorDetail {
	sc := jsonscan.New(b)
	if sc.Peek() == jsonscan.Array {
		var d upstream.ErrorDetail
		sc.Array(func(int) bool {
			d = readErrorBody(sc) // the first element only
			return false
		})
		return d
	}
	return readErrorBody(sc)
}

// readErrorBody reads {"error":{…}} into an ErrorDetail. Its strings
// are copies: the detail outlives the body.
func readErrorBody(sc *jsonscan.Scanner) upstream.ErrorDetail {
	var d upstream.ErrorDetail
	if sc.Peek() != jsonscan.Object {
		return d
	}
	keyInvalid := false
	sc.Object(func(k []byte) bool {
		if string(k) != "error" || sc.Peek() != jsonscan.Object {
			return true
		}
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "message":
				d.Message = strings.Clone(sc.OptStr())
			case "status":
				d.Code = strings.Clone(sc.OptStr())
			case "details":
				forEachValue(sc, func([]byte, int) bool {
					keyInvalid = detailKeyInvalid(sc) || keyInvalid
					return true
				})
			}
			return true
		})
		return true
	})
	if keyInvalid {
		d.Code = codeKeyInvalid
	}
	return d
}

// detailKeyInvalid reads one of an error's details, reporting whether
// it is the ErrorInfo that says the API key is not valid.
func detailKeyInvalid(sc *jsonscan.Scanner) bool {
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return false
	}
	found := false
	sc.Object(func(k []byte) bool {
		if string(k) == "reason" {
			found = sc.OptStr() == codeKeyInvalid || found
		}
		return true
	})
	return found
}
