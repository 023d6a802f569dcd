// Package responses is the edge's surface for OpenAI's Responses API,
// POST /v1/responses, which the official OpenAI SDKs steer new code to
// (client.responses.create), so those SDKs work against Meridian
// unchanged and reach any model: a local one, a peer's, or any provider.
//
// It decodes requests into the canonical llm.Request (input items,
// instructions, function tools and tool_choice, text.format,
// max_output_tokens, temperature, top_p) and turns canonical answers
// back into response objects and the Responses event sequence
// (response.created, response.in_progress, response.output_item.added,
// response.content_part.added, response.output_text.delta, …,
// response.completed with usage), each event with its sequence_number.
// The request's own bytes ride along (llm.FormatResponses), so an
// upstream that speaks the Responses API gets them as they came.
//
// It keeps no state: store, previous_response_id, conversation and
// background are refused with a 400 that says so, and it must never
// answer as if it had stored anything. Errors use OpenAI's shape; a
// stream that breaks after its first byte ends with response.failed and
// an error event, never with response.completed.
package responses

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Surface serves the Responses API.
type Surface struct {
	cfg api.Config
}

// New returns a Surface.
func New(cfg api.Config) *Surface {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Surface{cfg: cfg}
}

// Register adds the surface's routes to mux. Anything under
// /v1/responses/ (retrieving, deleting or cancelling a stored response,
// input_items) needs state this edge does not keep: a 404 that says so.
func (s *Surface) Register(mux *http.ServeMux) {
	mux.Handle("/v1/responses", s.cfg.Handler(format{}, decode))
	mux.HandleFunc("/v1/responses/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		openai.WriteError(w, llm.Errorf(http.StatusNotFound, llm.TypeInvalidRequest, "",
			"Meridian does not store responses: %s %s has nothing to find.", r.Method, r.URL.Path))
	})
}

func decode(_ *http.Request, body []byte) (*llm.Request, *llm.Error) { return Decode(body) }

// format is the Responses API's side of the request pipeline
// (api.Format).
type format struct{}

var (
	_ api.Format      = format{}
	_ api.CacheFormat = format{}
)

func (format) WriteError(w http.ResponseWriter, _ *http.Request, e *llm.Error) {
	openai.WriteError(w, e)
}

var keepAliveEvent = []byte(": keep-alive\n\n")

func (format) KeepAlive() []byte { return keepAliveEvent }

// RateLimitHeaders are OpenAI's x-ratelimit-* headers.
func (format) RateLimitHeaders(h http.Header, v *limits.Verdict, now time.Time) {
	openai.RateLimitHeaders(h, v, now)
}

// Encode returns an upstream's own response object as it came, and
// renders a canonical chat completion as one.
func (format) Encode(req *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Format == llm.FormatResponses {
		return resp.Body, resp.Usage, nil
	}
	cc, err := resp.ChatCompletion()
	if err != nil {
		return nil, llm.Usage{}, err
	}
	u := resp.Usage
	if cc.Usage != nil {
		u = *cc.Usage
	}
	return appendCompletion(make([]byte, 0, 1024), req, cc, u, false), u, nil
}

func (format) Stream(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	return newStreamer(req)
}

// EncodeCached renders a cached answer with its whole prompt marked as
// read from the cache (input_tokens_details.cached_tokens).
func (format) EncodeCached(req *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Format == llm.FormatResponses {
		return markCachedBody(resp.Body, "usage"), resp.Usage, nil
	}
	cc, err := resp.ChatCompletion()
	if err != nil {
		return nil, llm.Usage{}, err
	}
	u := resp.Usage
	if u == (llm.Usage{}) && cc.Usage != nil {
		u = *cc.Usage
	}
	return appendCompletion(make([]byte, 0, 1024), req, cc, u, true), u, nil
}

// StreamCached replays a cached stream; its response.completed marks the
// prompt as cached.
func (format) StreamCached(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	t := newStreamer(req)
	t.cached = true
	return t
}
