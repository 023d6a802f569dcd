package anthropic

import (
	"context"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/sse"
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
		payload, err = jsonscan.Delete(payload, "model")
		if err == nil {
			payload, err = jsonscan.Set(payload, []byte(`"`+vertexVersion+`"`), "anthropic_version")
		}
	} else if model != "" && model != req.Model {
		payload, err = jsonscan.Set(payload, jsonscan.AppendString(nil, model), "model")
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
	var ans answer
	if !ans.read(b, false) {
		return nil, badAnswer(a.up.ID())
	}
	if ans.typ == "error" {
		return nil, eventError(a.up.ID(), ans.err)
	}
	return &llm.Response{Body: b, Usage: ans.usage.usage(), Upstream: call.Since(), Format: llm.FormatAnthropic}, nil
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
			payload, err = jsonscan.Set(payload, jsonscan.AppendString(nil, model), "model")
		}
	} else {
		chat, cerr := req.ChatRequest()
		if cerr != nil {
			return nil, cerr
		}
		if payload, err = encodeRequest(chat, model, false); err == nil {
			for _, k := range []string{"max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"} {
				if payload, err = jsonscan.Delete(payload, k); err != nil {
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
	n, ok := inputTokens(b)
	if !ok {
		return nil, badAnswer(a.up.ID())
	}
	return &llm.Response{Body: b, Usage: llm.Usage{PromptTokens: int(n)}, Upstream: call.Since(), Format: llm.FormatAnthropic}, nil
}

// inputTokens reads count_tokens' answer, {"input_tokens":n}. The walk
// stops at the count: what follows it does not matter, not even a
// syntax error. ok is false when there is no number.
func inputTokens(b []byte) (n int64, ok bool) {
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		return 0, false
	}
	s.Object(func(k []byte) bool {
		if string(k) != "input_tokens" {
			return true
		}
		if ok = s.Peek() == jsonscan.Number; ok {
			n = s.LooseInt()
		}
		return false
	})
	return n, ok
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
	scan     jsonscan.Scanner
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
		// Only events that carry usage or an error are read, and
		// those without a name, to learn it. An event with neither a
		// name nor a type is no event of Anthropic's; relayed, it would
		// be one of OpenAI's.
		switch name = ev.Name; name {
		case "", "message_start", "message_delta", "error":
			name = s.read(name, ev.Data)
		}
	}
	switch name {
	case "message_stop":
		s.done = true
	case "error":
		// Reported in the client's format by its surface, which also
		// logs the stream as broken.
		return nil, s.err
	}
	s.chunk.SetRaw(ev.Data)
	s.chunk.Event = name
	return &s.chunk, nil
}

// read reads an event named name, or named by its type when name is
// "", and takes the usage or the error it carries. It returns the name.
// The event is on the stack, as in stream.Next.
func (s *rawStream) read(name string, data []byte) string {
	var e event
	e.read(&s.scan, data)
	if name == "" {
		name = e.typ
	}
	switch name {
	case "message_start":
		if e.msgUsage.object {
			s.tokens.apply(&e.msgUsage)
			s.hasUsage = true
		}
	case "message_delta":
		if e.usage.object {
			s.tokens.apply(&e.usage)
			s.hasUsage = true
		}
	case "error":
		s.err = eventError(s.provider, e.err)
	}
	return name
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
