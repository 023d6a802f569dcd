package responses

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Answers are written with appends rather than encoding/json: a streamed
// chunk must translate in well under a microsecond
// (BenchmarkTranslateChunk).

// Response statuses and the reasons of an incomplete one.
const (
	statusInProgress = "in_progress"
	statusCompleted  = "completed"
	statusIncomplete = "incomplete"
	statusFailed     = "failed"
)

// object is a response object's state, without what it echoes of the
// request.
type object struct {
	id, model string
	created   int64
	status    string
	// incomplete is incomplete_details.reason: max_output_tokens or
	// content_filter.
	incomplete string
	err        *llm.Error
	// output is the output array's items, comma-separated.
	output   []byte
	usage    llm.Usage
	hasUsage bool
	// cached marks the whole prompt as read from the edge cache.
	cached bool
}

// statusOf maps a canonical finish reason to a response's status and
// incomplete reason.
func statusOf(finish string) (status, incomplete string) {
	switch finish {
	case llm.FinishLength:
		return statusIncomplete, "max_output_tokens"
	case llm.FinishContentFilter:
		return statusIncomplete, "content_filter"
	}
	return statusCompleted, ""
}

func rawOr(b []byte, raw []byte, def string) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return append(b, def...)
	}
	return append(b, raw...)
}

// appendObject writes a response object.
func appendObject(b []byte, o *object, ec *echo) []byte {
	b = append(b, `{"id":`...)
	b = llm.AppendJSONString(b, o.id)
	b = append(b, `,"object":"response","created_at":`...)
	b = strconv.AppendInt(b, o.created, 10)
	b = append(b, `,"status":"`...)
	b = append(b, o.status...)
	b = append(b, `","background":false,"error":`...)
	if o.err != nil {
		b = append(b, `{"code":`...)
		code := o.err.Code
		if code == "" {
			code = "server_error"
		}
		b = llm.AppendJSONString(b, code)
		b = append(b, `,"message":`...)
		b = llm.AppendJSONString(b, o.err.Message)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"incomplete_details":`...)
	if o.incomplete != "" {
		b = append(b, `{"reason":"`...)
		b = append(b, o.incomplete...)
		b = append(b, `"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"instructions":`...)
	b = rawOr(b, ec.instructions, "null")
	b = append(b, `,"max_output_tokens":`...)
	b = rawOr(b, ec.maxOutput, "null")
	b = append(b, `,"model":`...)
	b = llm.AppendJSONString(b, o.model)
	b = append(b, `,"output":[`...)
	b = append(b, o.output...)
	b = append(b, `],"parallel_tool_calls":`...)
	b = rawOr(b, ec.parallel, "true")
	b = append(b, `,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":false,"temperature":`...)
	b = rawOr(b, ec.temperature, "null")
	b = append(b, `,"text":`...)
	b = rawOr(b, ec.text, `{"format":{"type":"text"}}`)
	b = append(b, `,"tool_choice":`...)
	b = rawOr(b, ec.toolChoice, `"auto"`)
	b = append(b, `,"tools":`...)
	b = rawOr(b, ec.tools, "[]")
	b = append(b, `,"top_p":`...)
	b = rawOr(b, ec.topP, "null")
	b = append(b, `,"truncation":"disabled","usage":`...)
	if o.hasUsage {
		b = appendUsage(b, o.usage, o.cached)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"user":`...)
	b = rawOr(b, ec.user, "null")
	b = append(b, `,"metadata":`...)
	b = rawOr(b, ec.metadata, "{}")
	return append(b, '}')
}

// appendUsage writes Responses usage; cached marks the whole prompt as
// read from the edge cache.
func appendUsage(b []byte, u llm.Usage, cached bool) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	if cached {
		b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	} else {
		b = append(b, '0')
	}
	b = append(b, `},"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens+u.CompletionTokens), 10)
	return append(b, '}')
}

// appendTextPart writes an output_text content part.
func appendTextPart(b []byte, text []byte) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":`...)
	b = llm.AppendJSONString(b, string(text))
	return append(b, '}')
}

// appendMessageItem writes a message output item holding parts (one
// content part's JSON, or none).
func appendMessageItem(b []byte, id, status string, parts []byte) []byte {
	b = append(b, `{"id":`...)
	b = llm.AppendJSONString(b, id)
	b = append(b, `,"type":"message","status":"`...)
	b = append(b, status...)
	b = append(b, `","role":"assistant","content":[`...)
	b = append(b, parts...)
	return append(b, "]}"...)
}

// appendCallItem writes a function_call output item.
func appendCallItem(b []byte, id, status, callID, name string, args []byte) []byte {
	b = append(b, `{"id":`...)
	b = llm.AppendJSONString(b, id)
	b = append(b, `,"type":"function_call","status":"`...)
	b = append(b, status...)
	b = append(b, `","arguments":`...)
	b = llm.AppendJSONString(b, string(args))
	b = append(b, `,"call_id":`...)
	b = llm.AppendJSONString(b, callID)
	b = append(b, `,"name":`...)
	b = llm.AppendJSONString(b, name)
	return append(b, '}')
}

// ids are the identifiers of one response and its items, all from the
// request ID, so the log line, the route header and the answer agree.
func responseID(reqID string) string { return "resp_" + reqID }
func messageID(reqID string) string  { return "msg_" + reqID }
func callItemID(reqID string, n int) string {
	return "fc_" + reqID + "_" + strconv.Itoa(n)
}

// appendCompletion renders a canonical chat completion as a response
// object. Only the first choice is used: Responses has no n.
func appendCompletion(b []byte, req *llm.Request, cc *llm.ChatCompletion, u llm.Usage, cached bool) []byte {
	o := object{id: responseID(req.ID), model: req.Model, created: cc.Created, usage: u, hasUsage: true, cached: cached}
	if o.created == 0 {
		o.created = time.Now().Unix()
	}
	finish := llm.FinishStop
	if len(cc.Choices) > 0 {
		ch := &cc.Choices[0]
		n := 0
		var parts []byte
		if ch.Message.Content != nil && *ch.Message.Content != "" {
			parts = appendTextPart(parts, []byte(*ch.Message.Content))
		}
		if ch.Message.Refusal != nil && *ch.Message.Refusal != "" {
			if parts != nil {
				parts = append(parts, ',')
			}
			parts = append(parts, `{"type":"refusal","refusal":`...)
			parts = llm.AppendJSONString(parts, *ch.Message.Refusal)
			parts = append(parts, '}')
		}
		if parts != nil {
			o.output = appendMessageItem(o.output, messageID(req.ID), statusCompleted, parts)
			n++
		}
		for i, tc := range ch.Message.ToolCalls {
			if n > 0 {
				o.output = append(o.output, ',')
			}
			n++
			o.output = appendCallItem(o.output, callItemID(req.ID, i), statusCompleted, tc.ID, tc.Function.Name, []byte(tc.Function.Arguments))
		}
		if ch.FinishReason != "" {
			finish = llm.FinishFrom(llm.FormatOpenAI, ch.FinishReason)
		}
	}
	o.status, o.incomplete = statusOf(finish)
	ec := readEcho(req.Native)
	return appendObject(b, &o, &ec)
}

// markCachedBody rewrites a native response object's usage so the whole
// prompt reads as served from the edge cache: input_tokens_details.
// cached_tokens becomes input_tokens, in the usage object at path. A
// body without input_tokens there, or one the rewrite cannot edit, is
// returned as it was.
func markCachedBody(body []byte, path ...string) []byte {
	in, ok := inputTokens(body, path)
	if !ok {
		return body
	}
	details := append(path[:len(path):len(path)], "input_tokens_details")
	n := strconv.AppendInt(nil, in, 10)
	out, err := jsonscan.Set(body, n, append(details, "cached_tokens")...)
	if errors.Is(err, jsonscan.ErrPath) {
		// input_tokens_details is there but not an object (null):
		// it is replaced by one.
		out, err = jsonscan.Set(body, append(append([]byte(`{"cached_tokens":`), n...), '}'), details...)
	}
	if err != nil {
		return body
	}
	return out
}

// inputTokens reads input_tokens in the object at path, in one walk that
// stops there: the first member of each name on the way counts.
func inputTokens(body []byte, path []string) (n int64, ok bool) {
	s := jsonscan.New(body)
	var walk func(depth int) bool
	walk = func(depth int) bool {
		if s.Peek() != jsonscan.Object {
			return false
		}
		want := "input_tokens"
		if depth < len(path) {
			want = path[depth]
		}
		done := false
		s.Object(func(k []byte) bool {
			if string(k) != want {
				return true
			}
			done = true
			if depth < len(path) {
				ok = walk(depth + 1)
			} else {
				n, ok = s.LooseInt(), true
			}
			return false
		})
		return done && ok
	}
	walk(0)
	return n, ok && s.Err() == nil
}

// call is one function call of a streamed answer.
type call struct {
	index  int // the canonical tool-call index
	output int // its output_index
	item   string
	callID string
	name   string
	args   []byte
	closed bool
}

// streamer turns a canonical chunk stream into the Responses event
// sequence. Items are opened as their first delta arrives and closed
// when another opens or the answer ends; each event carries the next
// sequence_number.
type streamer struct {
	req *llm.Request
	ec  echo
	obj object
	seq int

	started, passthrough bool
	// cached: the stream is a replay from the edge cache.
	cached bool

	nextOutput int
	// The open message item: its output_index and text so far.
	textOpen bool
	textOut  int
	text     []byte
	msgUsed  bool
	// deltaRef is the open message's part of every text delta event:
	// item_id, output_index, content_index and the "delta" key.
	deltaRef []byte
	calls    []call
	open     int // index in calls of the open call, or -1
	finish   string
}

func newStreamer(req *llm.Request) *streamer {
	return &streamer{req: req, open: -1,
		obj: object{id: responseID(req.ID), model: req.Model, created: time.Now().Unix(), status: statusInProgress}}
}

// event starts an event named name: its SSE header and the data's type
// and sequence_number; the caller appends the rest of the data object.
func (t *streamer) event(b []byte, name string) []byte {
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, name...)
	b = append(b, `","sequence_number":`...)
	b = strconv.AppendInt(b, int64(t.seq), 10)
	t.seq++
	return b
}

func endEvent(b []byte) []byte { return append(b, "}\n\n"...) }

// textDeltaHead starts a response.output_text.delta event, up to its
// sequence_number's value.
const textDeltaHead = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":"

func (t *streamer) start(b []byte) []byte {
	t.started = true
	t.ec = readEcho(t.req.Native)
	for _, name := range [2]string{"response.created", "response.in_progress"} {
		b = t.event(b, name)
		b = append(b, `,"response":`...)
		b = appendObject(b, &t.obj, &t.ec)
		b = endEvent(b)
	}
	return b
}

// itemRef appends an event's item_id and output_index.
func itemRef(b []byte, id string, output int) []byte {
	b = append(b, `,"item_id":`...)
	b = llm.AppendJSONString(b, id)
	b = append(b, `,"output_index":`...)
	return strconv.AppendInt(b, int64(output), 10)
}

func (t *streamer) openText(b []byte) []byte {
	b = t.closeOpen(b)
	t.textOpen, t.textOut, t.msgUsed = true, t.nextOutput, true
	t.nextOutput++
	id := messageID(t.req.ID)
	b = t.event(b, "response.output_item.added")
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(t.textOut), 10)
	b = append(b, `,"item":`...)
	b = appendMessageItem(b, id, statusInProgress, nil)
	b = endEvent(b)
	t.deltaRef = append(itemRef(t.deltaRef[:0], id, t.textOut), `,"content_index":0,"delta":`...)
	b = t.event(b, "response.content_part.added")
	b = itemRef(b, id, t.textOut)
	b = append(b, `,"content_index":0,"part":`...)
	b = appendTextPart(b, nil)
	return endEvent(b)
}

func (t *streamer) closeText(b []byte) []byte {
	if !t.textOpen {
		return b
	}
	t.textOpen = false
	id := messageID(t.req.ID)
	b = t.event(b, "response.output_text.done")
	b = itemRef(b, id, t.textOut)
	b = append(b, `,"content_index":0,"text":`...)
	b = llm.AppendJSONString(b, string(t.text))
	b = append(b, `,"logprobs":[]`...)
	b = endEvent(b)
	b = t.event(b, "response.content_part.done")
	b = itemRef(b, id, t.textOut)
	b = append(b, `,"content_index":0,"part":`...)
	b = appendTextPart(b, t.text)
	b = endEvent(b)
	b = t.event(b, "response.output_item.done")
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(t.textOut), 10)
	b = append(b, `,"item":`...)
	start := len(b)
	b = appendMessageItem(b, id, statusCompleted, appendTextPart(nil, t.text))
	t.addOutput(b[start:])
	return endEvent(b)
}

func (t *streamer) addOutput(item []byte) {
	if len(t.obj.output) > 0 {
		t.obj.output = append(t.obj.output, ',')
	}
	t.obj.output = append(t.obj.output, item...)
}

func (t *streamer) openCall(b []byte, index int, id, name string) []byte {
	b = t.closeOpen(b)
	c := call{index: index, output: t.nextOutput, item: callItemID(t.req.ID, len(t.calls)),
		callID: strings.Clone(id), name: strings.Clone(name)}
	t.nextOutput++
	t.calls = append(t.calls, c)
	t.open = len(t.calls) - 1
	b = t.event(b, "response.output_item.added")
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(c.output), 10)
	b = append(b, `,"item":`...)
	b = appendCallItem(b, c.item, statusInProgress, c.callID, c.name, nil)
	return endEvent(b)
}

func (t *streamer) closeCall(b []byte, i int) []byte {
	c := &t.calls[i]
	if c.closed {
		return b
	}
	c.closed = true
	b = t.event(b, "response.function_call_arguments.done")
	b = itemRef(b, c.item, c.output)
	b = append(b, `,"name":`...)
	b = llm.AppendJSONString(b, c.name)
	b = append(b, `,"arguments":`...)
	b = llm.AppendJSONString(b, string(c.args))
	b = endEvent(b)
	b = t.event(b, "response.output_item.done")
	b = append(b, `,"output_index":`...)
	b = strconv.AppendInt(b, int64(c.output), 10)
	b = append(b, `,"item":`...)
	start := len(b)
	b = appendCallItem(b, c.item, statusCompleted, c.callID, c.name, c.args)
	t.addOutput(b[start:])
	return endEvent(b)
}

// closeOpen closes the open item, if one is.
func (t *streamer) closeOpen(b []byte) []byte {
	b = t.closeText(b)
	if t.open >= 0 {
		b = t.closeCall(b, t.open)
		t.open = -1
	}
	return b
}

// findCall returns the position in calls of the call with canonical
// index, or -1.
func (t *streamer) findCall(index int) int {
	for i := len(t.calls) - 1; i >= 0; i-- {
		if t.calls[i].index == index {
			return i
		}
	}
	return -1
}

// chunk appends the events of one canonical chunk.
func (t *streamer) chunk(b []byte, c *llm.Chunk) []byte {
	if !t.started {
		b = t.start(b)
	}
	if c.Usage != nil {
		t.obj.usage, t.obj.hasUsage = *c.Usage, true
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if ch.Index != 0 {
			continue // Responses has no n: only the first choice is relayed
		}
		if ch.HasContent && ch.Content != "" {
			if !t.textOpen {
				b = t.openText(b)
			}
			t.text = append(t.text, ch.Content...)
			// The hot event: its constant parts are rendered once.
			b = append(b, textDeltaHead...)
			b = strconv.AppendInt(b, int64(t.seq), 10)
			t.seq++
			b = append(b, t.deltaRef...)
			b = llm.AppendJSONString(b, ch.Content)
			b = append(b, `,"logprobs":[]`...)
			b = endEvent(b)
		}
		for _, tc := range ch.ToolCalls {
			at := -1
			if t.open >= 0 && t.calls[t.open].index == tc.Index && tc.ID == "" {
				at = t.open
			} else if tc.ID == "" {
				at = t.findCall(tc.Index)
			}
			if at < 0 {
				b = t.openCall(b, tc.Index, tc.ID, tc.Name)
				at = t.open
			}
			if tc.Arguments == "" {
				continue
			}
			cl := &t.calls[at]
			cl.args = append(cl.args, tc.Arguments...)
			b = t.event(b, "response.function_call_arguments.delta")
			b = itemRef(b, cl.item, cl.output)
			b = append(b, `,"delta":`...)
			b = llm.AppendJSONString(b, tc.Arguments)
			b = endEvent(b)
		}
		if ch.FinishReason != "" {
			t.finish = llm.FinishFrom(llm.FormatOpenAI, ch.FinishReason)
		}
	}
	return b
}

// finishEvents closes every item and appends response.completed (or
// response.incomplete) with the whole response.
func (t *streamer) finishEvents(b []byte) []byte {
	if !t.started {
		b = t.start(b)
	}
	b = t.closeOpen(b)
	for i := range t.calls {
		b = t.closeCall(b, i)
	}
	t.obj.status, t.obj.incomplete = statusOf(t.finish)
	t.obj.cached = t.cached
	name := "response.completed"
	if t.obj.status == statusIncomplete {
		name = "response.incomplete"
	}
	b = t.event(b, name)
	b = append(b, `,"response":`...)
	b = appendObject(b, &t.obj, &t.ec)
	return endEvent(b)
}

// Chunk is api.StreamEncoder's: the events for one canonical chunk.
func (t *streamer) Chunk(b []byte, c *llm.Chunk) ([]byte, error) {
	if c.Event != "" {
		// An upstream's own Responses event, relayed as it came; its
		// response.completed is among them.
		t.passthrough = true
		data := c.Raw
		if t.cached && c.Event == "response.completed" {
			data = markCachedBody(data, "response", "usage")
		}
		return appendEvent(b, c.Event, data), nil
	}
	if err := c.Parse(); err != nil {
		return b, err
	}
	return t.chunk(b, c), nil
}

// End appends the events that end a response cleanly; u is the
// stream's usage, when the chunks carried none.
func (t *streamer) End(b []byte, u llm.Usage, hasUsage bool) []byte {
	if t.passthrough {
		return b
	}
	if hasUsage && !t.obj.hasUsage {
		t.obj.usage, t.obj.hasUsage = u, true
	}
	return t.finishEvents(b)
}

// Error appends response.failed, with the response so far, and an error
// event; no response.completed follows. The error event carries the
// error object of OpenAI's other APIs too, under "error", which is what
// the official SDKs raise on: a broken stream is an exception in the
// client, never a quiet, short answer.
func (t *streamer) Error(b []byte, e *llm.Error) []byte {
	if t.started && !t.passthrough {
		b = t.closeOpen(b)
		t.obj.status, t.obj.err = statusFailed, e
		b = t.event(b, "response.failed")
		b = append(b, `,"response":`...)
		b = appendObject(b, &t.obj, &t.ec)
		b = endEvent(b)
	}
	b = t.event(b, "error")
	b = append(b, `,"code":`...)
	if e.Code != "" {
		b = llm.AppendJSONString(b, e.Code)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"message":`...)
	b = llm.AppendJSONString(b, e.Message)
	b = append(b, `,"param":`...)
	if e.Param != "" {
		b = llm.AppendJSONString(b, e.Param)
	} else {
		b = append(b, "null"...)
	}
	body := openai.ErrorBody(e) // {"error":{…}}
	b = append(b, ',')
	b = append(b, body[1:len(body)-1]...)
	return endEvent(b)
}

// Usage is the usage the chunks carried.
func (t *streamer) Usage() (llm.Usage, bool) { return t.obj.usage, t.obj.hasUsage }

// appendEvent appends a server-sent event named name whose data is
// data, a line per line of data.
func appendEvent(b []byte, name string, data []byte) []byte {
	b = append(b, "event: "...)
	b = append(b, name...)
	for {
		b = append(b, "\ndata: "...)
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		b = append(b, data[:i]...)
		data = data[i+1:]
	}
	b = append(b, data...)
	return append(b, '\n', '\n')
}
