package anthropic

import (
	"context"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/sse"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// passthrough serves a request an Anthropic client sent (req.Native) to
// Anthropic as it came, with only the model renamed, and hands the
// answer back in Anthropic's format, unparsed but for its usage: no
// translation either way, as OpenAI clients get from OpenAI upstreams.
func (a *Adapter) passthrough(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	payload := req.Native
	var err error
	if a.url != nil {
		// Vertex AI: the model is in the URL, the version in the body.
		payload, err = sjson.DeleteBytes(payload, "model")
		if err == nil {
			payload, err = sjson.SetBytes(payload, "anthropic_version", vertexVersion)
		}
	} else if model != "" && model != req.Model {
		payload, err = sjson.SetBytes(payload, "model", model)
	}
	if err != nil {
		return nil, &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "request could not be encoded for the upstream", Cause: err}
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.endpoint(model, req.Stream), payload)
	if err != nil {
		return nil, err
	}
	if req.Stream {
		return &llm.Response{Stream: newRawStream(a.up.ID(), call, call.Resp.Body), Upstream: call.Since(), Format: llm.FormatAnthropic}, nil
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
		return nil, err
	}
	top := gjson.ParseBytes(b)
	if !gjson.ValidBytes(b) || !top.IsObject() {
		return nil, badAnswer(a.up.ID())
	}
	if top.Get("type").Str == "error" {
		return nil, eventError(a.up.ID(), top.Get("error"))
	}
	var t tokens
	t.update(top.Get("usage"))
	return &llm.Response{Body: b, Usage: t.usage(), Upstream: call.Since(), Format: llm.FormatAnthropic}, nil
}

// countTokens asks Anthropic's /messages/count_tokens. An Anthropic
// client's count request goes as it came, with only the model renamed;
// a translated one drops what only the messages endpoint takes.
func (a *Adapter) countTokens(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	var payload []byte
	var err error
	if req.NativeFormat == llm.FormatAnthropic && req.Native != nil {
		payload = req.Native
		if model != "" && model != req.Model {
			payload, err = sjson.SetBytes(payload, "model", model)
		}
	} else {
		chat, cerr := req.ChatRequest()
		if cerr != nil {
			return nil, cerr
		}
		if payload, err = encodeRequest(chat, model, false); err == nil {
			for _, k := range []string{"max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"} {
				if payload, err = sjson.DeleteBytes(payload, k); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		return nil, &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "request could not be encoded for the upstream", Cause: err}
	}
	count := *req
	count.Stream = false
	call, err := a.up.Send(ctx, &count, false, a.up.Base()+"/messages/count_tokens", payload)
	if err != nil {
		return nil, err
	}
	b, err := a.up.ReadAll(call)
	if err != nil {
		return nil, err
	}
	n := gjson.GetBytes(b, "input_tokens")
	if n.Type != gjson.Number {
		return nil, badAnswer(a.up.ID())
	}
	return &llm.Response{Body: b, Usage: llm.Usage{PromptTokens: int(n.Int())}, Upstream: call.Since(), Format: llm.FormatAnthropic}, nil
}

// rawStream relays Anthropic's events as they came (llm.Chunk.Event).
// It reads only the two events that carry usage and watches for the
// end and for errors; the deltas, which are nearly every event, are
// never parsed.
type rawStream struct {
	provider string
	call     body
	r        *sse.Reader
	chunk    llm.Chunk
	tokens   tokens
	hasUsage bool
	done     bool
	err      error
}

func newRawStream(provider string, call body, r io.Reader) *rawStream {
	return &rawStream{provider: provider, call: call, r: sse.NewReader(r)}
}

var (
	_ llm.Stream   = (*rawStream)(nil)
	_ llm.Buffered = (*rawStream)(nil)
)

// Next implements llm.Stream.
func (s *rawStream) Next() (*llm.Chunk, error) {
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
			// io.EOF too: a stream without message_stop was cut.
			s.err = s.call.ReadErr(err)
			return nil, s.err
		}
		s.call.Touch()
		// An event with neither a name nor a type is no event of
		// Anthropic's; relayed, it would be one of OpenAI's.
		if name = ev.Name; name == "" {
			name = gjson.GetBytes(ev.Data, "type").Str
		}
	}
	switch name {
	case "message_start":
		if u := gjson.GetBytes(ev.Data, "message.usage"); u.IsObject() {
			s.tokens.update(u)
			s.hasUsage = true
		}
	case "message_delta":
		if u := gjson.GetBytes(ev.Data, "usage"); u.IsObject() {
			s.tokens.update(u)
			s.hasUsage = true
		}
	case "message_stop":
		s.done = true
	case "error":
		// Reported in the client's format by its surface, which also
		// logs the stream as broken.
		s.err = eventError(s.provider, gjson.GetBytes(ev.Data, "error"))
		return nil, s.err
	}
	s.chunk.SetRaw(ev.Data)
	s.chunk.Event = name
	return &s.chunk, nil
}

// Buffered implements llm.Buffered.
func (s *rawStream) Buffered() int { return s.r.Buffered() }

// Usage implements llm.Stream.
func (s *rawStream) Usage() (llm.Usage, bool) { return s.tokens.usage(), s.hasUsage }

// Close implements llm.Stream.
func (s *rawStream) Close() error {
	s.call.Close(s.done)
	return nil
}
