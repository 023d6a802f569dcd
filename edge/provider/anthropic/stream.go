package anthropic

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
)

// body is what a stream needs of its upstream call: *upstream.Call in
// production, an in-memory fake in benchmarks and fuzzing.
type body interface {
	// Touch resets the silence watchdog.
	Touch()
	// ReadErr maps an error met while reading the body.
	ReadErr(error) error
	// Close releases the call; drained says the answer was complete.
	Close(drained bool)
}

var _ body = (*upstream.Call)(nil)

// phase is where a stream is in its canonical chunk sequence.
type phase uint8

const (
	reading   phase = iota // translating events
	usageNext              // message_stop was read; the usage chunk is next
	ended                  // the usage chunk went out; io.EOF is next
	failed                 // err is next, and every time after
)

// maxBlocks bounds the content block index a stream tracks, so a broken
// upstream cannot make it allocate without bound. Real answers hold a
// handful of blocks.
const maxBlocks = 1024

// block is what a stream remembers of one content block.
type block struct {
	tool int32 // index of the tool call it carries; -1 for other blocks
	args bool  // the call received an arguments fragment
}

// stream translates Anthropic's Messages event stream into canonical
// chunks: message_start gives the role chunk, text and input_json deltas
// give content and tool-call chunks, message_delta's stop reason gives
// the finish chunk and message_stop the usage chunk, then io.EOF.
// Anthropic's content block index counts text and tool blocks alike;
// OpenAI's tool call index counts calls only, so tool call k is the k-th
// tool_use block.
type stream struct {
	provider string
	call     body
	r        *sse.Reader
	chunk    llm.Chunk
	scan     jsonscan.Scanner

	id, model            string
	created              int64
	blocks               []block // by Anthropic block index
	tools                int     // tool_use blocks so far
	roleSent, finishSent bool
	tokens               tokens
	hasUsage             bool
	usage                llm.Usage // what the usage chunk points to
	phase                phase
	err                  error
}

var (
	_ llm.Stream   = (*stream)(nil)
	_ llm.Buffered = (*stream)(nil)
)

func newStream(provider string, call body, r io.Reader, model string) *stream {
	return &stream{provider: provider, call: call, r: sse.NewReader(r), id: idPrefix, model: model, created: time.Now().Unix()}
}

// Next implements llm.Stream.
func (s *stream) Next() (*llm.Chunk, error) {
	switch s.phase {
	case usageNext:
		s.phase = ended
		return s.usageChunk(), nil
	case ended:
		return nil, io.EOF
	case failed:
		return nil, s.err
	}
	for {
		ev, err := s.r.Next()
		if err != nil {
			// io.EOF too: a stream without message_stop was cut.
			return nil, s.fail(s.call.ReadErr(err))
		}
		s.call.Touch()
		// The event's bytes are read in place; strings a chunk keeps
		// are cloned, because the reader reuses its buffer.
		// e is on the stack: resetting it for every event in the heap
		// would cost write barriers for each of its strings.
		var e event
		if !e.quick(&s.scan, ev.Data) {
			e.read(&s.scan, ev.Data)
		}
		name := ev.Name
		if name == "" {
			name = e.typ
		}
		if c := s.event(name, view(ev.Data), &e); c != nil {
			return c, nil
		}
		if s.phase == failed {
			return nil, s.err
		}
	}
}

// event translates one event, read into e from data, returning the
// chunk it gives or nil for events that give none (ping, block stops,
// thinking, unknown events).
func (s *stream) event(name, data string, e *event) *llm.Chunk {
	switch name {
	case "content_block_start", "content_block_delta", "content_block_stop":
		if s.finishSent {
			return nil // content after the stop reason has nowhere to go
		}
	}
	switch name {
	case "message_start":
		if e.msgID != "" {
			s.id = idPrefix + e.msgID
		}
		if e.msgModel != "" {
			s.model = own(e.msgModel, data)
		}
		if e.msgUsage.object {
			s.tokens.apply(&e.msgUsage)
			s.hasUsage = true
		}
		if s.roleSent {
			return nil
		}
		s.begin()
		return &s.chunk

	case "content_block_start":
		switch e.blockType {
		case "text":
			if e.blockText != "" {
				ch := s.begin()
				ch.HasContent, ch.Content = true, own(e.blockText, data)
				return &s.chunk
			}
		case "tool_use":
			b := s.blockAt(e.index, true)
			if b == nil {
				return nil
			}
			b.tool = int32(s.tools)
			s.tools++
			id := own(e.blockID, data)
			if id == "" {
				// OpenAI clients tell a call's first delta by its ID.
				id = "toolu_" + strconv.Itoa(int(b.tool))
			}
			ch := s.begin()
			ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{
				Index: int(b.tool),
				ID:    id,
				Name:  own(e.blockName, data),
			})
			return &s.chunk
		}

	case "content_block_delta":
		if e.deltaText == "" {
			return nil
		}
		switch e.deltaType {
		case "text_delta":
			ch := s.begin()
			ch.HasContent, ch.Content = true, own(e.deltaText, data)
			return &s.chunk
		case "input_json_delta":
			b := s.blockAt(e.index, false)
			if b == nil || b.tool < 0 {
				return nil
			}
			b.args = true
			ch := s.begin()
			ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: int(b.tool), Arguments: own(e.deltaText, data)})
			return &s.chunk
		}
		// thinking_delta, signature_delta, citations_delta: no
		// OpenAI counterpart.

	case "content_block_stop":
		// A call without parameters streams no fragment, and OpenAI
		// clients parse "" as invalid JSON: give it "{}".
		b := s.blockAt(e.index, false)
		if b == nil || b.tool < 0 || b.args {
			return nil
		}
		b.args = true
		ch := s.begin()
		ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: int(b.tool), Arguments: "{}"})
		return &s.chunk

	case "message_delta":
		if e.usage.object {
			s.tokens.apply(&e.usage)
			s.hasUsage = true
		}
		if r := e.stopReason; r != "" && !s.finishSent {
			return s.finishChunk(finish(r, s.tools > 0))
		}

	case "message_stop":
		if !s.finishSent {
			s.phase = usageNext
			return s.finishChunk(finish("", s.tools > 0))
		}
		s.phase = ended
		return s.usageChunk()

	case "error":
		s.fail(eventError(s.provider, e.err))
	}
	return nil
}

// event is what a stream reads of one Messages event, whatever its
// type: each event is read once, in one pass, before its type (which
// may come last) says which fields count. Absent fields are zero, a
// missing index -1. Strings point into the event's bytes.
type event struct {
	typ   string
	index int64
	// message_start's message.
	msgID, msgModel string
	msgUsage        counts
	// content_block_start's content_block.
	blockType, blockText, blockID, blockName string
	// content_block_delta's and message_delta's delta; deltaText is a
	// text delta's text or a tool call's partial_json.
	deltaType, deltaText, stopReason string
	usage                            counts // message_delta's
	err                              apiError
}

// read reads data into e. An event that is not valid JSON is read up
// to its first syntax error and no further: what was read before it
// counts, and the stream goes on, as when gjson read events leniently.
// A repeated key takes its last value.
func (e *event) read(s *jsonscan.Scanner, data []byte) {
	*e = event{index: -1}
	s.Reset(data)
	if s.Peek() != jsonscan.Object {
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			e.typ = s.OptStr()
		case "index":
			e.index = s.LooseInt()
		case "message":
			e.readMessage(s)
		case "content_block":
			e.readBlock(s)
		case "delta":
			e.readDelta(s)
		case "usage":
			e.usage.read(s)
		case "error":
			e.err.read(s)
		}
		return true
	})
}

func (e *event) readMessage(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "id":
			e.msgID = s.OptStr()
		case "model":
			e.msgModel = s.OptStr()
		case "usage":
			e.msgUsage.read(s)
		}
		return true
	})
}

func (e *event) readBlock(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			e.blockType = s.OptStr()
		case "text":
			e.blockText = s.OptStr()
		case "id":
			e.blockID = s.OptStr()
		case "name":
			e.blockName = s.OptStr()
		}
		return true
	})
}

func (e *event) readDelta(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			e.deltaType = s.OptStr()
		case "text", "partial_json":
			e.deltaText = s.OptStr()
		case "stop_reason":
			e.stopReason = s.OptStr()
		}
		return true
	})
}

// The shape Anthropic writes every text and tool-argument delta in. The
// hot path matches it byte for byte; anything else (other key order,
// spacing, fields added later) takes the general path.
const (
	deltaPrefix = `{"type":"content_block_delta","index":`
	textDelta   = `,"delta":{"type":"text_delta","text":`
	jsonDelta   = `,"delta":{"type":"input_json_delta","partial_json":`
)

// quick reads a content_block_delta event written in Anthropic's usual
// shape, faster than read (BenchmarkTranslateChunk takes about 1.3x as
// long without it): the per-chunk budget is 1 µs, SSE parsing included.
// It reports false, having read nothing, for any other shape. It gives
// what read gives for the same bytes (FuzzQuickDelta).
func (e *event) quick(s *jsonscan.Scanner, data []byte) bool {
	index, typ, val, ok := quickDelta(s, data)
	if !ok {
		return false
	}
	*e = event{typ: "content_block_delta", index: index, deltaType: typ, deltaText: val}
	return true
}

// quickDelta reads the index, delta type and text of a delta event in
// the usual shape; ok is false for any other shape. The text, the one
// string with escapes, is read by the scanner.
func quickDelta(s *jsonscan.Scanner, data []byte) (index int64, typ, val string, ok bool) {
	rest, ok := bytes.CutPrefix(data, []byte(deltaPrefix))
	if !ok {
		return 0, "", "", false
	}
	n := 0
	for n < len(rest) && n < 9 && rest[n] >= '0' && rest[n] <= '9' {
		index = index*10 + int64(rest[n]-'0')
		n++
	}
	if n == 0 || n > 1 && rest[0] == '0' {
		return 0, "", "", false
	}
	rest = rest[n:]
	switch {
	case bytes.HasPrefix(rest, []byte(textDelta)):
		typ, rest = "text_delta", rest[len(textDelta):]
	case bytes.HasPrefix(rest, []byte(jsonDelta)):
		typ, rest = "input_json_delta", rest[len(jsonDelta):]
	default:
		return 0, "", "", false
	}
	// What is left is the string literal and the two closing braces.
	lit, found := bytes.CutSuffix(rest, []byte("}}"))
	if !found || len(lit) < 2 || lit[0] != '"' {
		return 0, "", "", false
	}
	s.Reset(lit)
	val = s.Str()
	if s.End() != nil {
		return 0, "", "", false
	}
	return index, typ, val, true
}

// own returns s, which the scanner read from data, as a string that
// does not share data's memory: the SSE reader reuses its buffer, and a
// chunk's strings must not change under a consumer that keeps them.
// Strings the scanner had to unescape are fresh already.
func own(s, data string) string {
	if s == "" {
		return ""
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	base := uintptr(unsafe.Pointer(unsafe.StringData(data)))
	if p >= base && p < base+uintptr(len(data)) {
		return strings.Clone(s)
	}
	return s
}

// blockAt returns the block at index, or nil for an index out of
// bounds. add makes room for a new block.
func (s *stream) blockAt(index int64, add bool) *block {
	if index < 0 || index >= maxBlocks {
		return nil
	}
	for add && int64(len(s.blocks)) <= index {
		s.blocks = append(s.blocks, block{tool: -1})
	}
	if index >= int64(len(s.blocks)) {
		return nil
	}
	return &s.blocks[index]
}

// begin resets the chunk to one empty choice, keeping the memory of its
// tool call slice. The stream's first chunk carries the role.
func (s *stream) begin() *llm.ChunkChoice {
	c := &s.chunk
	c.Reset()
	c.ID, c.Model, c.Created = s.id, s.model, s.created
	if cap(c.Choices) == 0 {
		c.Choices = append(c.Choices, llm.ChunkChoice{})
	} else {
		c.Choices = c.Choices[:1]
		c.Choices[0] = llm.ChunkChoice{ToolCalls: c.Choices[0].ToolCalls[:0]}
	}
	ch := &c.Choices[0]
	if !s.roleSent {
		s.roleSent = true
		ch.Role, ch.HasContent = llm.RoleAssistant, true
	}
	return ch
}

func (s *stream) finishChunk(reason string) *llm.Chunk {
	s.finishSent = true
	s.begin().FinishReason = reason
	return &s.chunk
}

// usageChunk is the last chunk: no choices, the token counts.
func (s *stream) usageChunk() *llm.Chunk {
	c := &s.chunk
	c.Reset()
	c.ID, c.Model, c.Created = s.id, s.model, s.created
	s.usage = s.tokens.usage()
	c.Usage = &s.usage
	return c
}

func (s *stream) fail(err error) error {
	s.phase, s.err = failed, err
	return err
}

// Buffered implements llm.Buffered. The usage chunk after message_stop
// is already in memory.
func (s *stream) Buffered() int {
	if s.phase == usageNext {
		return 1
	}
	return s.r.Buffered()
}

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) { return s.tokens.usage(), s.hasUsage }

// Close implements llm.Stream. After message_stop only the body's end
// is left, so the connection is drained back to the pool.
func (s *stream) Close() error {
	s.call.Close(s.phase == usageNext || s.phase == ended)
	return nil
}
