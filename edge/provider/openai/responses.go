package openai

import (
	"context"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
)

// passResponses serves a Responses API request (req.Native) to an
// upstream that speaks it, as it came with only the model renamed, and
// hands its answer back in the Responses format, unparsed but for its
// usage: no translation either way.
func (a *Adapter) passResponses(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	payload := req.Native
	if model != "" && model != req.Model {
		var err error
		if payload, err = jsonscan.Set(payload, jsonscan.AppendString(nil, model), "model"); err != nil {
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
	u, ok := responseObject(b)
	if !ok {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true,
			Message: "upstream provider " + a.up.ID() + " sent an answer that is not JSON"}
	}
	return &llm.Response{Body: b, Usage: u, Upstream: call.Since(), Format: llm.FormatResponses}, nil
}

// responseObject checks that b is one JSON value and reads its usage,
// in one pass.
func responseObject(b []byte) (u llm.Usage, valid bool) {
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return u, s.End() == nil
	}
	seen := false
	s.Object(func(k []byte) bool {
		if string(k) == "usage" && !seen {
			seen = true
			if s.Peek() == jsonscan.Object {
				u = readResponsesUsage(s)
			}
		}
		return true
	})
	return u, s.End() == nil
}

// responsesEvent is what responsesStream reads of an event's data.
type responsesEvent struct {
	typ      string // type
	usage    llm.Usage
	hasUsage bool   // response.usage is an object
	message  string // message, else error.message
	code     string // code

	seen uint8 // the members already read: the first wins
}

const (
	seenType = 1 << iota
	seenResponse
	seenMessage
	seenError
	seenCode
	seenUsageIn
)

// terminal reports whether an event of type t ends the stream or
// reports an error: the events whose data is read beyond their type.
func terminal(t string) bool {
	switch t {
	case "response.completed", "response.incomplete", "response.failed", "error":
		return true
	}
	return false
}

// readEvent reads an event's data in one pass. Without a name (named
// false), its type is read first; the walk stops there when the type
// is not terminal, so a delta costs a few bytes.
func readEvent(data []byte, named bool) responsesEvent {
	var ev responsesEvent
	var errMsg string
	s := jsonscan.New(data)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			if ev.seen&seenType == 0 {
				ev.seen |= seenType
				if s.Peek() == jsonscan.String {
					ev.typ = s.Str()
				}
				if !named && !terminal(ev.typ) {
					return false
				}
			}
		case "response":
			if ev.seen&seenResponse == 0 {
				ev.seen |= seenResponse
				if s.Peek() == jsonscan.Object {
					s.Object(func(k []byte) bool {
						if string(k) == "usage" && ev.seen&seenUsageIn == 0 {
							ev.seen |= seenUsageIn
							if s.Peek() == jsonscan.Object {
								ev.usage, ev.hasUsage = readResponsesUsage(s), true
							}
						}
						return true
					})
				}
			}
		case "message":
			ev.message = firstStr(s, &ev.seen, seenMessage, ev.message)
		case "code":
			ev.code = firstStr(s, &ev.seen, seenCode, ev.code)
		case "error":
			if ev.seen&seenError == 0 {
				ev.seen |= seenError
				if s.Peek() == jsonscan.Object {
					first := false
					s.Object(func(k []byte) bool {
						if string(k) == "message" && !first {
							first = true
							if s.Peek() == jsonscan.String {
								errMsg = s.Str()
							}
						}
						return true
					})
				}
			}
		}
		return true
	})
	if ev.message == "" {
		ev.message = errMsg
	}
	return ev
}

// firstStr reads a string member the first time its name is met.
func firstStr(s *jsonscan.Scanner, seen *uint8, bit uint8, cur string) string {
	if *seen&bit != 0 {
		return cur
	}
	*seen |= bit
	if s.Peek() == jsonscan.String {
		return s.Str()
	}
	return cur
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
	var read responsesEvent
	name := ""
	for name == "" {
		var err error
		if ev, err = s.r.Next(); err != nil {
			s.err = s.call.ReadErr(err)
			return nil, s.err
		}
		s.call.Touch()
		switch name = ev.Name; {
		case name == "":
			read = readEvent(ev.Data, false)
			name = read.typ
		case terminal(name):
			read = readEvent(ev.Data, true)
		}
	}
	switch name {
	case "response.completed", "response.incomplete", "response.failed":
		if read.hasUsage {
			s.usage, s.hasUsage = read.usage, true
		}
		s.done = true
	case "error":
		// Reported in the client's format by its surface.
		s.err = &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: read.code,
			Message: "upstream provider " + s.provider + " reported an error mid-stream: " + read.message}
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
