package ollama

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/tidwall/gjson"
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
// to pass on.
//
// Lines are not validated up front: that pass costs as much as the
// parse. Ollama writes each line with a JSON encoder and every line
// carries "done", so a line is checked in full only when the walk over
// it did not reach "done" or "error" (gjson stops early on bad JSON),
// or when the body ended inside it.
func (s *stream) translate(line []byte) (*llm.Chunk, error) {
	if s.atEOF && !gjson.ValidBytes(line) {
		return nil, s.call.ReadErr(io.ErrUnexpectedEOF) // the body ended inside a line
	}
	if line[0] != '{' {
		return nil, s.malformed()
	}
	var (
		content, calls, errMsg gjson.Result
		done, sawDone          bool
		reason                 string
		prompt, completion     int64
	)
	gjson.ParseBytes(line).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "message":
			v.ForEach(func(k, v gjson.Result) bool {
				switch k.Str {
				case "content":
					content = v
				case "tool_calls":
					if v.IsArray() {
						calls = v
					}
				}
				return true
			})
		case "done":
			done, sawDone = v.Type == gjson.True, true
		case "done_reason":
			reason = v.Str
		case "prompt_eval_count":
			prompt = v.Int()
		case "eval_count":
			completion = v.Int()
		case "model":
			if !s.started && v.Str != "" {
				s.model = v.Str
			}
		case "created_at":
			if s.created == 0 {
				s.created = unixTime(v.Str)
			}
		case "error":
			errMsg = v
		}
		return true
	})
	if !sawDone && !errMsg.Exists() && !gjson.ValidBytes(line) {
		return nil, s.malformed()
	}
	if errMsg.Exists() {
		// A runner failure, like a 5xx: its text (which may name model
		// files on the server) goes to the logs, not to the client.
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
			Message: "upstream provider " + s.provider + " reported an error mid-stream", Cause: errors.New(errMsg.String())}
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
	if content.Type == gjson.String && content.Str != "" {
		ch.Content, ch.HasContent = content.Str, true
		news = true
	}
	calls.ForEach(func(_, tc gjson.Result) bool {
		call := toolCall(tc)
		ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: s.calls, ID: call.ID, Name: call.Function.Name, Arguments: call.Function.Arguments})
		s.calls++
		news = true
		return true
	})

	if !done {
		if !news {
			return nil, nil
		}
		return c, nil
	}
	s.done = true
	s.usage = usage(prompt, completion)
	s.finish = llm.FinishFrom(llm.FormatOllama, reason)
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
