package ollama

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
)

// Stream reading limits.
const (
	// readBuffer is the line reader's buffer: the usual line is a
	// couple of hundred bytes, a line with a tool call a few KB. Longer
	// lines are assembled in a buffer of their own.
	readBuffer = 16 << 10
	// maxLine bounds one NDJSON line. A longer one is refused rather
	// than buffered without limit.
	maxLine = 8 << 20
)

var errLineTooLong = errors.New("upstream stream line longer than 8 MiB")

// Stream phases after the upstream's done line: the chunks that close a
// canonical stream are made up, not read.
const (
	phaseRead   = iota // reading lines
	phaseFinish        // the finish chunk is next
	phaseUsage         // the usage chunk is next
	phaseEnd           // io.EOF is next
)

// stream reads Ollama's newline-delimited JSON stream: one object per
// line, {"message":{"content":...},"done":false}, then one with
// "done":true, done_reason and the token counts. Tool calls arrive
// whole, each in one line. An {"error":...} line is an error the
// upstream met mid-stream. Lines that carry nothing canonical (a
// thinking model's message.thinking) are skipped.
type stream struct {
	call     *upstream.Call
	provider string
	r        *bufio.Reader
	long     []byte // a line longer than the reader's buffer, assembled
	atEOF    bool   // the last line had no newline: the body has ended
	chunk    llm.Chunk
	scan     jsonscan.Scanner
	line     chatAnswer // what the last line held

	id      string
	model   string
	created int64

	started bool // the first chunk, with the role, was returned
	calls   int  // tool calls so far: the index of the next one
	finish  string
	usage   llm.Usage
	phase   int
	done    bool // the done line was read: the upstream finished
}

var (
	_ llm.Stream   = (*stream)(nil)
	_ llm.Buffered = (*stream)(nil)
)

func newStream(call *upstream.Call, provider, model string) *stream {
	return &stream{
		call:     call,
		provider: provider,
		r:        bufio.NewReaderSize(call.Resp.Body, readBuffer),
		id:       newID("chatcmpl-"),
		model:    model,
	}
}

// Next implements llm.Stream.
func (s *stream) Next() (*llm.Chunk, error) {
	switch s.phase {
	case phaseFinish:
		s.phase = phaseUsage
		return s.finishChunk(), nil
	case phaseUsage:
		s.phase = phaseEnd
		s.chunk.Reset()
		s.header()
		s.chunk.Usage = &s.usage
		return &s.chunk, nil
	case phaseEnd:
		return nil, io.EOF
	}
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + s.provider + " sent a stream line that is too long", Cause: err}
			}
			return nil, s.call.ReadErr(err)
		}
		s.call.Touch()
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		c, err := s.translate(line)
		if err != nil || c != nil {
			return c, err
		}
	}
}

// translate turns one line into a chunk, or nil for a line with nothing
// to pass on. The line is read once, in order (jsonscan), and checked as
// it is read: a line that is not one JSON object is malformed, or, when
// the body ended inside it, a cut stream. Texts point into the line,
// which stays valid as long as the chunk does.
func (s *stream) translate(line []byte) (*llm.Chunk, error) {
	sc := &s.scan
	sc.Reset(line)
	a := &s.line
	if sc.Peek() != jsonscan.Object {
		if s.atEOF {
			if sc.Skip(); sc.End() != nil {
				return nil, s.call.ReadErr(io.ErrUnexpectedEOF) // the body ended inside a line
			}
		}
		return nil, s.malformed()
	}
	if a.read(sc); sc.End() != nil {
		if s.atEOF {
			return nil, s.call.ReadErr(io.ErrUnexpectedEOF)
		}
		return nil, s.malformed()
	}
	if !s.started && a.model != "" {
		s.model = strings.Clone(a.model) // it outlives the line
	}
	if s.created == 0 && a.createdAt != "" {
		s.created = unixTime(a.createdAt)
	}
	if a.hasErr {
		// A runner failure, like a 5xx: its text (which may name model
		// files on the server) goes to the logs, not to the client.
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
			Message: "upstream provider " + s.provider + " reported an error mid-stream", Cause: errors.New(strings.Clone(errText(a.err)))}
	}
	if s.created == 0 {
		s.created = unixTime("")
	}

	c := &s.chunk
	c.Reset()
	s.header()
	if cap(c.Choices) > 0 {
		c.Choices = c.Choices[:1]
		c.Choices[0] = llm.ChunkChoice{ToolCalls: c.Choices[0].ToolCalls[:0]}
	} else {
		c.Choices = append(c.Choices, llm.ChunkChoice{})
	}
	ch := &c.Choices[0]
	news := false
	if !s.started {
		s.started = true
		ch.Role, ch.HasContent = llm.RoleAssistant, true
		news = true
	}
	if a.content != "" {
		ch.Content, ch.HasContent = a.content, true
		news = true
	}
	for i := range a.calls {
		// A call comes whole and rarely: it is copied, for consumers
		// that keep calls past the chunk.
		call := &a.calls[i]
		ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: s.calls, ID: strings.Clone(call.ID),
			Name: strings.Clone(call.Function.Name), Arguments: strings.Clone(call.Function.Arguments)})
		s.calls++
		news = true
	}

	if !a.done {
		if !news {
			return nil, nil
		}
		return c, nil
	}
	s.done = true
	s.usage = usage(a.prompt, a.completion)
	s.finish = llm.FinishFrom(llm.FormatOllama, a.reason)
	if s.calls > 0 {
		s.finish = llm.FinishToolCalls
	} else if s.finish == "" {
		s.finish = llm.FinishStop
	}
	if news {
		s.phase = phaseFinish
		return c, nil
	}
	s.phase = phaseUsage
	return s.finishChunk(), nil
}

func (s *stream) malformed() error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + s.provider + " sent a malformed stream line"}
}

// header sets the fields every chunk of the stream carries.
func (s *stream) header() {
	s.chunk.ID, s.chunk.Model, s.chunk.Created = s.id, s.model, s.created
}

func (s *stream) finishChunk() *llm.Chunk {
	c := &s.chunk
	c.Reset()
	s.header()
	if cap(c.Choices) > 0 {
		c.Choices = c.Choices[:1]
		c.Choices[0] = llm.ChunkChoice{ToolCalls: c.Choices[0].ToolCalls[:0], FinishReason: s.finish}
	} else {
		c.Choices = append(c.Choices, llm.ChunkChoice{FinishReason: s.finish})
	}
	return c
}

// readLine returns the next line, valid until the next call. A last
// line without a newline is returned with atEOF set.
func (s *stream) readLine() ([]byte, error) {
	if s.atEOF {
		return nil, io.EOF
	}
	line, err := s.r.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		if err == io.EOF && len(line) > 0 {
			s.atEOF = true
			return line, nil
		}
		return nil, err
	}
	s.long = append(s.long[:0], line...)
	for {
		line, err = s.r.ReadSlice('\n')
		if len(s.long)+len(line) > maxLine {
			return nil, errLineTooLong
		}
		s.long = append(s.long, line...)
		switch {
		case err == nil:
			return s.long, nil
		case err == bufio.ErrBufferFull:
		case err == io.EOF:
			s.atEOF = true
			return s.long, nil
		default:
			return nil, err
		}
	}
}

// Buffered implements llm.Buffered: the chunks made up after the done
// line are in memory too.
func (s *stream) Buffered() int {
	switch s.phase {
	case phaseFinish, phaseUsage:
		return 1
	case phaseEnd:
		return 0
	}
	return s.r.Buffered()
}

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) { return s.usage, s.done }

// Close implements llm.Stream. After the done line only the body's end
// is left, so the connection is drained back to the pool.
func (s *stream) Close() error {
	s.call.Close(s.done)
	return nil
}
