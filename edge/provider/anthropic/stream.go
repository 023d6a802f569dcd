package anthropic

import (
	"io"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
	"github.com/tidwall/gjson"
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
		// The event's bytes are parsed in place; strings a chunk keeps
		// are cloned, because the reader reuses its buffer.
		data := view(ev.Data)
		name := ev.Name
		if name == "" {
			name = gjson.Get(data, "type").Str
		}
		if c := s.event(name, data); c != nil {
			return c, nil
		}
		if s.phase == failed {
			return nil, s.err
		}
	}
}

// event translates one event, returning the chunk it gives or nil for
// events that give none (ping, block stops, thinking, unknown events).
func (s *stream) event(name, data string) *llm.Chunk {
	switch name {
	case "content_block_start", "content_block_delta", "content_block_stop":
		if s.finishSent {
			return nil // content after the stop reason has nowhere to go
		}
	}
	switch name {
	case "message_start":
		m := gjson.Get(data, "message")
		if id := m.Get("id").Str; id != "" {
			s.id = idPrefix + id
		}
		if model := m.Get("model").Str; model != "" {
			s.model = own(model, data)
		}
		if u := m.Get("usage"); u.IsObject() {
			s.tokens.update(u)
			s.hasUsage = true
		}
		if s.roleSent {
			return nil
		}
		s.begin()
		return &s.chunk

	case "content_block_start":
		index, cb := fields(data, "content_block")
		switch cb.Get("type").Str {
		case "text":
			if t := cb.Get("text").Str; t != "" {
				ch := s.begin()
				ch.HasContent, ch.Content = true, own(t, data)
				return &s.chunk
			}
		case "tool_use":
			b := s.blockAt(index, true)
			if b == nil {
				return nil
			}
			b.tool = int32(s.tools)
			s.tools++
			id := own(cb.Get("id").Str, data)
			if id == "" {
				// OpenAI clients tell a call's first delta by its ID.
				id = "toolu_" + strconv.Itoa(int(b.tool))
			}
			ch := s.begin()
			ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{
				Index: int(b.tool),
				ID:    id,
				Name:  own(cb.Get("name").Str, data),
			})
			return &s.chunk
		}

	case "content_block_delta":
		index, typ, val, ok := quickDelta(data)
		if !ok {
			index, typ, val = slowDelta(data)
		}
		if val == "" {
			return nil
		}
		switch typ {
		case "text_delta":
			ch := s.begin()
			ch.HasContent, ch.Content = true, own(val, data)
			return &s.chunk
		case "input_json_delta":
			b := s.blockAt(index, false)
			if b == nil || b.tool < 0 {
				return nil
			}
			b.args = true
			ch := s.begin()
			ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: int(b.tool), Arguments: own(val, data)})
			return &s.chunk
		}
		// thinking_delta, signature_delta, citations_delta: no
		// OpenAI counterpart.

	case "content_block_stop":
		// A call without parameters streams no fragment, and OpenAI
		// clients parse "" as invalid JSON: give it "{}".
		index, _ := fields(data, "")
		b := s.blockAt(index, false)
		if b == nil || b.tool < 0 || b.args {
			return nil
		}
		b.args = true
		ch := s.begin()
		ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: int(b.tool), Arguments: "{}"})
		return &s.chunk

	case "message_delta":
		if u := gjson.Get(data, "usage"); u.IsObject() {
			s.tokens.update(u)
			s.hasUsage = true
		}
		if r := gjson.Get(data, "delta.stop_reason").Str; r != "" && !s.finishSent {
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
		s.fail(eventError(s.provider, gjson.Get(data, "error")))
	}
	return nil
}

// The shape Anthropic writes every text and tool-argument delta in. The
// hot path matches it byte for byte; anything else (other key order,
// spacing, fields added later) takes the gjson path.
const (
	deltaPrefix = `{"type":"content_block_delta","index":`
	textDelta   = `,"delta":{"type":"text_delta","text":`
	jsonDelta   = `,"delta":{"type":"input_json_delta","partial_json":`
)

// quickDelta reads a content_block_delta event written in Anthropic's
// usual shape, about five times faster than gjson: the per-chunk
// budget is 1 µs, SSE parsing included. ok is false for any other
// shape. It gives what slowDelta gives for the same bytes.
func quickDelta(data string) (index int64, typ, val string, ok bool) {
	rest, ok := strings.CutPrefix(data, deltaPrefix)
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
	case strings.HasPrefix(rest, textDelta):
		typ, rest = "text_delta", rest[len(textDelta):]
	case strings.HasPrefix(rest, jsonDelta):
		typ, rest = "input_json_delta", rest[len(jsonDelta):]
	default:
		return 0, "", "", false
	}
	// What is left is the string literal and the two closing braces.
	lit, found := strings.CutSuffix(rest, "}}")
	if !found || len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return 0, "", "", false
	}
	escaped := false
	for i := 1; i < len(lit)-1; i++ {
		switch lit[i] {
		case '\\':
			if i == len(lit)-2 {
				return 0, "", "", false // escapes the closing quote
			}
			escaped = true
			i++
		case '"':
			return 0, "", "", false
		}
	}
	if escaped {
		return index, typ, gjson.Parse(lit).Str, true
	}
	return index, typ, lit[1 : len(lit)-1], true
}

// slowDelta reads a content_block_delta event of any shape: one pass
// over the event, one over its delta.
func slowDelta(data string) (index int64, typ, val string) {
	index, d := fields(data, "delta")
	d.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v.Str
		case "text", "partial_json":
			val = v.Str
		}
		return true
	})
	return index, typ, val
}

// fields reads an event's block index and its object named key in one
// pass. A missing index is -1.
func fields(data, key string) (index int64, obj gjson.Result) {
	index = -1
	gjson.Parse(data).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "index":
			index = v.Int()
		case key:
			obj = v
		}
		return true
	})
	return index, obj
}

// own returns s, which gjson read from data, as a string that does not
// share data's memory: the SSE reader reuses its buffer, and a chunk's
// strings must not change under a consumer that keeps them. Strings
// gjson had to unescape are fresh already.
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
