package bedrock

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
)

// body is what a stream needs of its upstream call: *upstream.Call in
// production, an in-memory fake in benchmarks and fuzzing.
type body interface {
	Touch()
	ReadErr(error) error
	Close(drained bool)
}

var _ body = (*upstream.Call)(nil)

// maxBlocks bounds the content block index a stream tracks, so a broken
// upstream cannot make it allocate without bound.
const maxBlocks = 1024

// phase is where a stream is in its canonical chunk sequence.
type phase uint8

const (
	reading phase = iota
	ended         // the metadata event (usage) went out; io.EOF is next
	failed        // err is next, and every time after
)

// stream translates ConverseStream's event stream (AWS event-stream
// binary framing, decoded by the SDK's eventstream package) into
// canonical chunks: messageStart gives the role chunk, contentBlockStart
// of a toolUse the call's first chunk, contentBlockDelta text and input
// fragments, messageStop the finish chunk and metadata the usage chunk.
// An exception event ends the stream with its error.
type stream struct {
	provider string
	call     body
	r        *bufio.Reader
	frames   frameReader
	f        frame
	chunk    llm.Chunk
	scan     jsonscan.Scanner
	ev       eventFields

	id, model   string
	created     int64
	tools       []int32 // tool call index by content block index; -1 for text blocks
	calls       int
	roleSent    bool
	usage       llm.Usage
	hasUsage    bool
	finishSent  bool
	phase       phase
	err         error
	calledTools bool
}

var (
	_ llm.Stream   = (*stream)(nil)
	_ llm.Buffered = (*stream)(nil)
)

func newStream(provider string, call body, r io.Reader, id, model string, created int64) *stream {
	s := &stream{provider: provider, call: call, r: bufio.NewReaderSize(r, 16<<10), id: id, model: model, created: created}
	s.frames.r = s.r
	return s
}

// Next implements llm.Stream.
func (s *stream) Next() (*llm.Chunk, error) {
	switch s.phase {
	case ended:
		return nil, io.EOF
	case failed:
		return nil, s.err
	}
	for {
		err := s.frames.next(&s.f)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF) && s.finishSent:
				// The answer ended without its metadata event: end as if
				// it reported no usage.
				s.phase = ended
				return nil, io.EOF
			case errors.Is(err, errFrame):
				return nil, s.fail(s.malformed(err))
			case errors.Is(err, io.EOF):
				err = io.ErrUnexpectedEOF
			}
			return nil, s.fail(s.call.ReadErr(err))
		}
		s.call.Touch()
		c, err := s.event(&s.f)
		if err != nil {
			return nil, s.fail(err)
		}
		if c != nil {
			return c, nil
		}
	}
}

// event translates one event; nil means it gives no chunk.
func (s *stream) event(f *frame) (*llm.Chunk, error) {
	switch string(f.messageType) {
	case "event":
	case "exception":
		// The message outlives the frame's buffer, in s.err.
		s.ev.read(&s.scan, f.payload)
		return nil, exception(s.provider, string(f.exceptionType), strings.Clone(s.ev.message), s.roleSent)
	case "error":
		return nil, exception(s.provider, string(f.errorCode), string(f.errorMessage), s.roleSent)
	default:
		return nil, nil
	}
	ev := &s.ev
	switch string(f.eventType) {
	case "messageStart":
		if s.roleSent {
			return nil, nil
		}
		return s.begin(), nil
	case "contentBlockStart":
		ev.read(&s.scan, f.payload)
		if !ev.toolUse {
			return nil, nil
		}
		idx := ev.index
		if idx < 0 || idx >= maxBlocks {
			return nil, s.malformed(nil)
		}
		for int64(len(s.tools)) <= idx {
			s.tools = append(s.tools, -1)
		}
		s.tools[idx] = int32(s.calls)
		s.calls++
		s.calledTools = true
		// A call's ID and name are copied: consumers keep them while
		// they gather the call's arguments from later frames, which
		// reuse the buffer. Text and arguments live as long as the chunk.
		ch := s.begin().Choices
		ch[0].ToolCalls = append(ch[0].ToolCalls, llm.ToolCallDelta{Index: int(s.tools[idx]), ID: strings.Clone(ev.toolUseID), Name: strings.Clone(ev.name)})
		return &s.chunk, nil
	case "contentBlockDelta":
		ev.read(&s.scan, f.payload)
		if ev.hasText {
			c := s.begin()
			c.Choices[0].Content, c.Choices[0].HasContent = ev.text, true
			return c, nil
		}
		if ev.hasInput {
			idx := ev.index
			if idx < 0 || idx >= int64(len(s.tools)) || s.tools[idx] < 0 {
				return nil, s.malformed(nil)
			}
			ch := s.begin().Choices
			ch[0].ToolCalls = append(ch[0].ToolCalls, llm.ToolCallDelta{Index: int(s.tools[idx]), Arguments: ev.input})
			return &s.chunk, nil
		}
		return nil, nil // reasoning and citations have no OpenAI counterpart
	case "messageStop":
		ev.read(&s.scan, f.payload)
		s.finishSent = true
		c := s.begin()
		c.Choices[0].FinishReason = finish(ev.stopReason, s.calledTools)
		return c, nil
	case "metadata":
		ev.read(&s.scan, f.payload)
		s.usage, s.hasUsage = ev.usage, true
		s.phase = ended
		c := &s.chunk
		c.Reset()
		c.ID, c.Model, c.Created = s.id, s.model, s.created
		c.Usage = &s.usage
		return c, nil
	}
	return nil, nil
}

// eventFields is what the stream reads of an event's payload, whatever
// the event: each payload is read once, in order, into it. Strings point
// into the frame's buffer, valid until the next frame.
type eventFields struct {
	index           int64  // contentBlockIndex
	toolUse         bool   // start.toolUse is an object
	toolUseID, name string // start.toolUse's
	text            string // delta.text
	hasText         bool   // delta.text is a string
	input           string // delta.toolUse.input
	hasInput        bool   // delta.toolUse.input is a string
	stopReason      string
	usage           llm.Usage
	message         string // an exception's
}

// read fills ev from payload p. A payload that is not valid JSON keeps
// what was read before the fault and is otherwise ignored, as it always
// was: the frame's CRC has vouched for the bytes, and an event that says
// nothing readable gives no chunk. A repeated key takes its last value.
func (ev *eventFields) read(sc *jsonscan.Scanner, p []byte) {
	*ev = eventFields{}
	sc.Reset(p)
	if sc.Peek() != jsonscan.Object {
		return
	}
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "contentBlockIndex":
			ev.index = sc.LooseInt()
		case "start":
			if sc.Peek() != jsonscan.Object {
				sc.Skip()
				return true
			}
			sc.Object(func(k []byte) bool {
				if string(k) == "toolUse" {
					ev.toolUse = sc.Peek() == jsonscan.Object
					ev.toolUseID, ev.name = "", ""
					if !ev.toolUse {
						sc.Skip()
						return true
					}
					sc.Object(func(k []byte) bool {
						switch string(k) {
						case "toolUseId":
							ev.toolUseID, _ = checkedStr(sc)
						case "name":
							ev.name, _ = checkedStr(sc)
						}
						return true
					})
				}
				return true
			})
		case "delta":
			if sc.Peek() != jsonscan.Object {
				sc.Skip()
				return true
			}
			sc.Object(func(k []byte) bool {
				switch string(k) {
				case "text":
					ev.text, ev.hasText = checkedStr(sc)
				case "toolUse":
					if sc.Peek() != jsonscan.Object {
						sc.Skip()
						return true
					}
					sc.Object(func(k []byte) bool {
						if string(k) == "input" {
							ev.input, ev.hasInput = checkedStr(sc)
						}
						return true
					})
				}
				return true
			})
		case "stopReason":
			ev.stopReason, _ = checkedStr(sc)
		case "usage":
			ev.usage = readUsage(sc)
		case "message":
			ev.message, _ = checkedStr(sc)
		}
		return true
	})
}

// checkedStr reads a string; ok is false for any other value (skipped)
// or a string with a fault.
func checkedStr(s *jsonscan.Scanner) (string, bool) {
	if s.Peek() != jsonscan.String {
		s.Skip()
		return "", false
	}
	v := s.Str()
	return v, s.Err() == nil
}

// malformed is the error for frames or events that break the format.
// Nothing is retried once the client has had a chunk.
func (s *stream) malformed(cause error) error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: !s.roleSent, Cause: cause,
		Message: "upstream provider " + s.provider + " sent a malformed event stream"}
}

// begin resets the chunk to one empty choice; the stream's first chunk
// carries the role.
func (s *stream) begin() *llm.Chunk {
	c := &s.chunk
	c.Reset()
	c.ID, c.Model, c.Created = s.id, s.model, s.created
	if cap(c.Choices) == 0 {
		c.Choices = append(c.Choices, llm.ChunkChoice{})
	} else {
		c.Choices = c.Choices[:1]
		c.Choices[0] = llm.ChunkChoice{ToolCalls: c.Choices[0].ToolCalls[:0]}
	}
	if !s.roleSent {
		s.roleSent = true
		c.Choices[0].Role, c.Choices[0].HasContent = llm.RoleAssistant, true
	}
	return c
}

func (s *stream) fail(err error) error {
	s.phase, s.err = failed, err
	return err
}

// Buffered implements llm.Buffered.
func (s *stream) Buffered() int { return s.r.Buffered() }

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) { return s.usage, s.hasUsage }

// Close implements llm.Stream. After the metadata event only the body's
// end is left, so the connection is drained back to the pool.
func (s *stream) Close() error {
	s.call.Close(s.phase == ended)
	return nil
}
