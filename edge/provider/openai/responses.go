package openai

import (
	"context"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// passResponses serves a Responses API request (req.Native) to an
// upstream that speaks it, as it came with only the model renamed, and
// hands its answer back in the Responses format, unparsed but for its
// usage: no translation either way.
func (a *Adapter) passResponses(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	payload := req.Native
	if model != "" && model != req.Model {
		var err error
		if payload, err = sjson.SetBytes(payload, "model", model); err != nil {
			return nil, &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "request could not be encoded for the upstream", Cause: err}
		}
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.up.Base()+"/responses", payload)
	if err != nil {
		return nil, err
	}
	if req.Stream {
		return &llm.Response{Stream: &responsesStream{provider: a.up.ID(), call: call, r: sse.NewReader(call.Resp.Body)},
			Upstream: call.Since(), Format: llm.FormatResponses}, nil
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
		return nil, err
	}
	if !gjson.ValidBytes(b) {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true,
			Message: "upstream provider " + a.up.ID() + " sent an answer that is not JSON"}
	}
	return &llm.Response{Body: b, Usage: responsesUsage(gjson.GetBytes(b, "usage")), Upstream: call.Since(), Format: llm.FormatResponses}, nil
}

// responsesUsage reads a response object's usage.
func responsesUsage(u gjson.Result) llm.Usage {
	in, out := int(u.Get("input_tokens").Int()), int(u.Get("output_tokens").Int())
	return llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out}
}

// responsesStream relays a Responses event stream as it came
// (llm.Chunk.Event). It reads only the terminal events, for the usage
// and the end; the deltas are never parsed. A stream that ends before
// response.completed, response.incomplete or response.failed was cut.
type responsesStream struct {
	provider string
	call     *upstream.Call
	r        *sse.Reader
	chunk    llm.Chunk
	usage    llm.Usage
	hasUsage bool
	done     bool
	err      error
}

var (
	_ llm.Stream   = (*responsesStream)(nil)
	_ llm.Buffered = (*responsesStream)(nil)
)

// Next implements llm.Stream.
func (s *responsesStream) Next() (*llm.Chunk, error) {
	switch {
	case s.err != nil:
		return nil, s.err
	case s.done:
		return nil, io.EOF
	}
	var ev sse.Event
	name := ""
	for name == "" {
		var err error
		if ev, err = s.r.Next(); err != nil {
			s.err = s.call.ReadErr(err)
			return nil, s.err
		}
		s.call.Touch()
		if name = ev.Name; name == "" {
			name = gjson.GetBytes(ev.Data, "type").Str
		}
	}
	switch name {
	case "response.completed", "response.incomplete", "response.failed":
		if u := gjson.GetBytes(ev.Data, "response.usage"); u.IsObject() {
			s.usage, s.hasUsage = responsesUsage(u), true
		}
		s.done = true
	case "error":
		// Reported in the client's format by its surface.
		msg := gjson.GetBytes(ev.Data, "message").Str
		if msg == "" {
			msg = gjson.GetBytes(ev.Data, "error.message").Str
		}
		s.err = &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: gjson.GetBytes(ev.Data, "code").Str,
			Message: "upstream provider " + s.provider + " reported an error mid-stream: " + msg}
		return nil, s.err
	}
	s.chunk.SetRaw(ev.Data)
	s.chunk.Event = name
	return &s.chunk, nil
}

// Buffered implements llm.Buffered.
func (s *responsesStream) Buffered() int { return s.r.Buffered() }

// Usage implements llm.Stream.
func (s *responsesStream) Usage() (llm.Usage, bool) { return s.usage, s.hasUsage }

// Close implements llm.Stream.
func (s *responsesStream) Close() error {
	s.call.Close(s.done)
	return nil
}
