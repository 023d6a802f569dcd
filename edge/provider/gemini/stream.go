package gemini

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
)

// conn is what a stream needs of its upstream call. *upstream.Call is
// one; tests and benchmarks read from memory through a fake.
type conn interface {
	Touch()
	ReadErr(err error) error
	Close(drained bool)
}

var _ conn = (*upstream.Call)(nil)

// stream translates Gemini's alt=sse stream into canonical chunks.
//
// Each SSE event is a whole GenerateContentResponse holding the parts
// generated since the last one. There is no end marker: the stream ends
// with EOF after the event that carries finishReason, so EOF is a clean
// end only once every candidate has finished; before that it is a cut.
//
// One event can hold several things to say (text, function calls, a
// finish), and OpenAI's chunk sequence says them one per chunk, so an
// event becomes a short queue of pieces that Next hands out in turn.
type stream struct {
	c        conn
	r        *sse.Reader
	chunk    llm.Chunk
	provider string // the provider's ID, for messages

	// id, model and created name every chunk; they are set from the
	// first event.
	id, model string
	created   int64
	named     bool // id and model are final
	ids       callIDs

	cands [maxCandidates]candState
	queue []piece
	head  int
	// usageBuf is the last usageMetadata seen, parsed only when asked
	// for: every event repeats it, and only the last one counts.
	usageBuf []byte

	scan  jsonscan.Scanner
	usage llm.Usage

	ended bool  // EOF after every candidate finished; the usage chunk is next
	done  bool  // the usage chunk went out; io.EOF is next
	err   error // returned again after a failure
}

var (
	_ llm.Stream   = (*stream)(nil)
	_ llm.Buffered = (*stream)(nil)
)

// candState is where a candidate's delta sequence stands.
type candState struct {
	seen     bool // it appeared in an event
	started  bool // its role chunk went out (or is queued)
	calls    int  // its tool calls so far, for their indexes
	finished bool
}

type pieceKind uint8

const (
	pieceText pieceKind = iota
	pieceCall
	pieceFinish
)

// piece is one chunk's worth of an event.
type piece struct {
	kind pieceKind
	cand int
	role bool   // first delta of the candidate
	text string // text, or a call's arguments
	// call is the tool call's index within its candidate; name and id
	// are the function's name and the call's ID from Gemini, if it gave
	// one.
	call     int
	name, id string
	finish   string
}

func newStream(c conn, body io.Reader, provider, model string) *stream {
	return &stream{c: c, r: sse.NewReader(body), provider: provider, model: model, created: time.Now().Unix(), queue: make([]piece, 0, 4)}
}

// Next implements llm.Stream.
func (s *stream) Next() (*llm.Chunk, error) {
	for {
		if s.head < len(s.queue) {
			p := &s.queue[s.head]
			s.head++
			return s.fill(p), nil
		}
		s.queue, s.head = s.queue[:0], 0
		switch {
		case s.err != nil:
			return nil, s.err
		case s.done:
			return nil, io.EOF
		case s.ended:
			s.done = true
			c := s.reset()
			s.usage, _ = s.Usage()
			c.Usage = &s.usage
			return c, nil
		}
		ev, err := s.r.Next()
		if err != nil {
			if err == io.EOF && s.finished() {
				s.ended = true
				continue
			}
			s.err = s.c.ReadErr(err)
			return nil, s.err
		}
		s.c.Touch()
		if err := s.event(ev.Data); err != nil {
			s.queue, s.err = s.queue[:0], err
			return nil, err
		}
	}
}

// finished reports whether every candidate seen has finished, and at
// least one was seen.
func (s *stream) finished() bool {
	seen := false
	for i := range s.cands {
		if s.cands[i].seen {
			if !s.cands[i].finished {
				return false
			}
			seen = true
		}
	}
	return seen
}

func (s *stream) reset() *llm.Chunk {
	c := &s.chunk
	c.Reset()
	c.ID, c.Model, c.Created = s.id, s.model, s.created
	return c
}

// fill makes the chunk for p.
func (s *stream) fill(p *piece) *llm.Chunk {
	c := s.reset()
	if cap(c.Choices) == 0 {
		c.Choices = make([]llm.ChunkChoice, 0, 1)
	}
	c.Choices = c.Choices[:1]
	ch := &c.Choices[0]
	*ch = llm.ChunkChoice{Index: p.cand, ToolCalls: ch.ToolCalls[:0]}
	switch p.kind {
	case pieceText:
		if p.role {
			ch.Role = llm.RoleAssistant
		}
		ch.Content, ch.HasContent = p.text, true
	case pieceCall:
		id := p.id
		if id == "" {
			id = s.ids.next()
		}
		ch.ToolCalls = append(ch.ToolCalls, llm.ToolCallDelta{Index: p.call, ID: id, Name: p.name, Arguments: p.text})
	case pieceFinish:
		ch.FinishReason = p.finish
	}
	return c
}

// event reads one GenerateContentResponse into the queue, in one pass
// (jsonscan): it runs for every streamed chunk. Queued text points into
// data, which stays valid until the queue is drained; what outlives the
// event (names, usage) is copied.
func (s *stream) event(data []byte) error {
	sc := &s.scan
	sc.Reset(data)
	if sc.Peek() != jsonscan.Object {
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + s.provider + " sent a stream event that is not a JSON object"}
	}
	var block string
	var failure error
	n := 0
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "candidates":
			// Read in place. Tool calls get their IDs when their chunk
			// is made, after the whole event (and its responseId) is read.
			if sc.Peek() == jsonscan.Array {
				sc.Array(func(pos int) bool {
					n++
					failure = s.candidate(sc, pos)
					return failure == nil
				})
			}
		case "usageMetadata":
			if sc.Peek() == jsonscan.Object {
				s.usageBuf = append(s.usageBuf[:0], sc.Raw()...)
			}
		case "modelVersion":
			if v := sc.OptStr(); !s.named && v != "" {
				s.model = strings.Clone(v)
			}
		case "responseId":
			if v := sc.OptStr(); !s.named && v != "" {
				s.id = "chatcmpl-" + v
				s.ids = newCallIDs(v)
			}
		case "promptFeedback":
			block = blockReason(sc)
		case "error":
			failure = s.midStreamError(sc)
			return false
		}
		return true
	})
	if failure != nil {
		return failure
	}
	if err := sc.End(); err != nil {
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + s.provider + " sent a stream event that is not valid JSON", Cause: err}
	}
	if !s.named {
		s.named = true
		if s.id == "" {
			// No responseId: name the stream anyway, at random.
			s.ids = newCallIDs("")
			s.id = "chatcmpl-" + strconv.FormatUint(s.ids.seed, 36)
		}
	}
	if n == 0 && block != "" {
		return blocked(block)
	}
	return nil
}

// candidate queues the pieces of one candidate's increment. It reads in
// place, taking the candidate's position as its index; Gemini writes
// "index" last and it equals the position, but when it does not, the
// candidate is read again from its bytes with the right index.
func (s *stream) candidate(sc *jsonscan.Scanner, pos int) error {
	from := sc.Offset()
	if pos >= maxCandidates {
		pos = maxCandidates - 1
	}
	saved, queued := s.cands[pos], len(s.queue)
	idx, err := s.readCandidate(sc, pos)
	if err != nil || idx == pos || sc.Err() != nil {
		return err
	}
	s.cands[pos], s.queue = saved, s.queue[:queued]
	if idx < 0 || idx >= maxCandidates {
		return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: fmt.Sprintf("upstream provider %s sent candidate %d", s.provider, idx)}
	}
	var again jsonscan.Scanner
	again.Reset(sc.Bytes()[from:sc.Offset()])
	if _, err = s.readCandidate(&again, idx); err == nil && again.Err() != nil {
		err = &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream provider " + s.provider + " sent a stream event that is not valid JSON", Cause: again.Err()}
	}
	return err
}

// readCandidate reads one candidate as candidate idx and returns the
// index it names (idx when it names none).
func (s *stream) readCandidate(sc *jsonscan.Scanner, idx int) (int, error) {
	named := idx
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return idx, nil
	}
	st := &s.cands[idx]
	st.seen = true
	finished := st.finished // nothing may follow a finish
	textAt := -1            // queue index of this event's text piece, to append to
	var finish string
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "content":
			if sc.Peek() != jsonscan.Object {
				return true
			}
			sc.Object(func(k []byte) bool {
				if string(k) != "parts" || sc.Peek() != jsonscan.Array {
					return true
				}
				sc.Array(func(int) bool {
					if sc.Peek() != jsonscan.Object {
						sc.Skip()
						return true
					}
					var text string
					var fc functionCall
					call, thought := false, false
					sc.Object(func(k []byte) bool {
						switch string(k) {
						case "text":
							text = sc.OptStr()
						case "functionCall":
							var f functionCall
							if readFunctionCall(sc, &f) {
								fc, call = f, true
							}
						case "thought":
							thought = sc.Peek() == jsonscan.Bool && sc.Bool()
						}
						return true
					})
					if thought || finished {
						return true // a thought summary is not part of the answer
					}
					if text != "" {
						if textAt >= 0 {
							s.queue[textAt].text += text
						} else {
							textAt = len(s.queue)
							s.queue = append(s.queue, piece{kind: pieceText, cand: idx, role: s.start(st), text: text})
						}
					}
					if call && sc.Err() == nil { // compacting needs args whole and valid
						s.opening(st, idx)
						s.queue = append(s.queue, piece{kind: pieceCall, cand: idx, call: st.calls,
							name: fc.name, id: fc.id, text: compactArgs(fc.args)})
						st.calls++
						textAt = -1 // text after a call is a later delta
					}
					return true
				})
				return true
			})
		case "finishReason":
			finish = sc.OptStr()
		case "index":
			if sc.Peek() == jsonscan.Number {
				n, _ := sc.Int()
				named = int(n)
			}
		}
		return true
	})
	if finish != "" && !finished {
		s.opening(st, idx)
		st.finished = true
		s.queue = append(s.queue, piece{kind: pieceFinish, cand: idx, finish: finishReason(finish, st.calls > 0)})
	}
	return named, nil // a syntax error stays in sc, for the caller to report
}

// start marks a candidate started, reporting whether it was not yet.
func (s *stream) start(st *candState) bool {
	if st.started {
		return false
	}
	st.started = true
	return true
}

// opening queues the role chunk a candidate owes before a piece that
// is not text.
func (s *stream) opening(st *candState, idx int) {
	if s.start(st) {
		s.queue = append(s.queue, piece{kind: pieceText, cand: idx, role: true})
	}
}

// midStreamError reads an error event's error and maps it. Gemini
// reports overload as UNAVAILABLE and rate limits as RESOURCE_EXHAUSTED;
// both may succeed elsewhere. Nothing else in an error event is the
// client's fault at this point. An error that is not an object, or not
// valid JSON, says nothing more than that an error happened.
func (s *stream) midStreamError(sc *jsonscan.Scanner) *llm.Error {
	var msg, status string
	var code int64
	if sc.Peek() == jsonscan.Object {
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "message":
				msg = sc.OptStr()
			case "status":
				status = sc.OptStr()
			case "code":
				code = sc.LooseInt()
			}
			return true
		})
	}
	if sc.Err() != nil {
		msg, status, code = "", "", 0
	}
	status = strings.Clone(status) // the error outlives the event
	provider := s.provider
	switch {
	case status == "UNAVAILABLE" || code == http.StatusServiceUnavailable:
		return &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeOverloaded, Code: status,
			Message: "upstream provider " + provider + " is overloaded: " + msg, Retryable: true}
	case status == "RESOURCE_EXHAUSTED" || code == http.StatusTooManyRequests:
		return &llm.Error{Status: http.StatusTooManyRequests, Type: llm.TypeRateLimit, Code: status,
			Message: "upstream provider " + provider + " is rate limiting requests: " + msg, Retryable: true}
	}
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: status,
		Message: "upstream provider " + provider + " reported an error mid-stream: " + msg}
}

// Buffered implements llm.Buffered: queued pieces and a pending usage
// chunk are in memory too.
func (s *stream) Buffered() int {
	n := len(s.queue) - s.head + s.r.Buffered()
	if s.ended && !s.done {
		n++
	}
	return n
}

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) {
	if len(s.usageBuf) == 0 {
		return llm.Usage{}, false
	}
	// A scanner of its own: s.scan is Next's.
	return scanUsage(jsonscan.New(s.usageBuf)), true
}

// Close implements llm.Stream. After a clean end only the body's end is
// left, so the connection is drained back to the pool.
func (s *stream) Close() error {
	s.c.Close(s.ended)
	return nil
}
