package anthropic

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Answers are written with appends rather than encoding/json: a streamed
// chunk must translate in well under a microsecond
// (BenchmarkTranslateChunk).

func messageID(id string) string {
	if strings.HasPrefix(id, "msg_") {
		return id
	}
	return "msg_" + strings.TrimPrefix(id, "chatcmpl-")
}

// toolInput returns a tool call's arguments as the JSON object Anthropic
// wants for "input"; arguments that are not an object become {}.
func toolInput(args string) string {
	a := strings.TrimSpace(args)
	if len(a) > 1 && a[0] == '{' && json.Valid([]byte(a)) {
		return a
	}
	return "{}"
}

// appendMessage writes a canonical chat completion as an Anthropic
// message object. Only the first choice is used: Anthropic has no n.
func appendMessage(b []byte, cc *llm.ChatCompletion, model string) []byte {
	return appendMessageUsage(b, cc, model, false)
}

// appendMessageUsage is appendMessage, with the usage marked as read
// from the cache when cached is set.
func appendMessageUsage(b []byte, cc *llm.ChatCompletion, model string, cached bool) []byte {
	b = append(b, `{"id":`...)
	b = llm.AppendJSONString(b, messageID(cc.ID))
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = llm.AppendJSONString(b, model)
	b = append(b, `,"content":[`...)
	stop := llm.FinishStop
	if len(cc.Choices) > 0 {
		ch := &cc.Choices[0]
		n := 0
		if ch.Message.Content != nil && *ch.Message.Content != "" {
			b = append(b, `{"type":"text","text":`...)
			b = llm.AppendJSONString(b, *ch.Message.Content)
			b = append(b, '}')
			n++
		}
		for _, tc := range ch.Message.ToolCalls {
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = append(b, `{"type":"tool_use","id":`...)
			b = llm.AppendJSONString(b, tc.ID)
			b = append(b, `,"name":`...)
			b = llm.AppendJSONString(b, tc.Function.Name)
			b = append(b, `,"input":`...)
			b = append(b, toolInput(tc.Function.Arguments)...)
			b = append(b, '}')
		}
		if ch.FinishReason != "" {
			stop = ch.FinishReason
		}
		if len(ch.Message.ToolCalls) > 0 {
			stop = llm.FinishToolCalls
		}
	}
	b = append(b, `],"stop_reason":`...)
	b = llm.AppendJSONString(b, llm.FinishTo(llm.FormatAnthropic, stop))
	b = append(b, `,"stop_sequence":null,"usage":`...)
	var u llm.Usage
	if cc.Usage != nil {
		u = *cc.Usage
	}
	if cached {
		return append(appendCachedUsage(b, u), '}')
	}
	return append(appendUsage(b, u, true), '}')
}

// appendCachedUsage renders the usage of an answer served from the edge
// cache: Anthropic counts cache reads apart from input_tokens, so the
// whole prompt is cache_read_input_tokens and input_tokens is 0.
func appendCachedUsage(b []byte, u llm.Usage) []byte {
	b = append(b, `{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	return append(b, '}')
}

var _ api.CacheFormat = format{}

// EncodeCached renders a cached answer (an OpenAI completion) as an
// Anthropic message whose usage says the prompt was read from the cache.
func (format) EncodeCached(req *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Format == llm.FormatAnthropic {
		// An Anthropic upstream's own message: its usage, marked.
		var msg map[string]json.RawMessage
		if err := json.Unmarshal(resp.Body, &msg); err != nil {
			return nil, llm.Usage{}, err
		}
		markCached(msg, -1)
		b, err := json.Marshal(msg)
		return b, resp.Usage, err
	}
	cc, err := resp.ChatCompletion()
	if err != nil {
		return nil, llm.Usage{}, err
	}
	u := resp.Usage
	if cc.Usage == nil {
		cc.Usage = &u
	}
	return appendMessageUsage(make([]byte, 0, 1024), cc, req.Model, true), u, nil
}

// markCached rewrites the "usage" of obj (an Anthropic message, or a
// message_delta event) so that the whole prompt reads as cached:
// input_tokens 0, cache_read_input_tokens the prompt. A usage without
// input counts takes prompt, when it is not negative. It returns the
// prompt's tokens.
func markCached(obj map[string]json.RawMessage, prompt int64) int64 {
	var u map[string]json.RawMessage
	if json.Unmarshal(obj["usage"], &u) != nil || u == nil {
		return prompt
	}
	total, counted := int64(0), false
	for _, k := range []string{"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"} {
		var n int64
		if v, ok := u[k]; ok && json.Unmarshal(v, &n) == nil {
			total, counted = total+n, true
		}
	}
	if !counted {
		if prompt < 0 {
			return prompt
		}
		total = prompt
	}
	u["input_tokens"], u["cache_creation_input_tokens"] = json.RawMessage("0"), json.RawMessage("0")
	u["cache_read_input_tokens"] = json.RawMessage(strconv.FormatInt(total, 10))
	obj["usage"], _ = json.Marshal(u)
	return total
}

// markCachedEvent rewrites the usage in a replayed native event:
// message_start's message.usage, message_delta's usage.
func (t *translator) markCachedEvent(name string, data []byte) []byte {
	if name != "message_start" && name != "message_delta" {
		return data
	}
	var ev map[string]json.RawMessage
	if json.Unmarshal(data, &ev) != nil {
		return data
	}
	if name == "message_delta" {
		t.cachedPrompt = markCached(ev, t.cachedPrompt)
	} else {
		var msg map[string]json.RawMessage
		if json.Unmarshal(ev["message"], &msg) != nil {
			return data
		}
		t.cachedPrompt = markCached(msg, t.cachedPrompt)
		ev["message"], _ = json.Marshal(msg)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return data
	}
	return b
}

// StreamCached translates a replayed stream; its message_delta carries
// the usage, marked as read from the cache.
func (format) StreamCached(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	t := newTranslator(req.Model, "msg_"+req.ID)
	t.requestID, t.cached, t.cachedPrompt = req.ID, true, -1
	return t
}

func appendUsage(b []byte, u llm.Usage, input bool) []byte {
	b = append(b, '{')
	if input {
		b = append(b, `"input_tokens":`...)
		b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
		b = append(b, ',')
	}
	b = append(b, `"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	return append(b, '}')
}

// translator turns a canonical chunk stream into Anthropic's events. It
// holds the open content block: text deltas go to a text block, each new
// tool call opens a tool_use block, and a block is closed when another
// opens or the message ends.
type translator struct {
	model, id string
	requestID string // for error events
	// passthrough is set once an upstream event was relayed as it came:
	// the upstream's events then make the whole sequence.
	passthrough bool
	started     bool
	pinged      bool
	next        int  // index of the next content block
	open        bool // a block is open, at index next-1
	openTool    int  // canonical index of the open tool call, or -1 for text
	stopReason  string
	usage       llm.Usage
	hasUsage    bool
	// cached: the stream is a replay from the edge cache, and its usage
	// says so; cachedPrompt is a replayed native stream's prompt tokens,
	// from its message_start, or -1.
	cached       bool
	cachedPrompt int64
}

func newTranslator(model, id string) *translator {
	return &translator{model: model, id: id, openTool: -1}
}

func event(b []byte, name string) []byte {
	b = append(b, "event: "...)
	b = append(b, name...)
	return append(b, "\ndata: "...)
}

func (t *translator) start(b []byte) []byte {
	t.started = true
	b = event(b, "message_start")
	b = append(b, `{"type":"message_start","message":{"id":`...)
	b = llm.AppendJSONString(b, t.id)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = llm.AppendJSONString(b, t.model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}`+"\n\n"...)
	return b
}

func (t *translator) closeBlock(b []byte) []byte {
	if !t.open {
		return b
	}
	t.open = false
	b = event(b, "content_block_stop")
	b = append(b, `{"type":"content_block_stop","index":`...)
	b = strconv.AppendInt(b, int64(t.next-1), 10)
	return append(b, "}\n\n"...)
}

func (t *translator) openBlock(b []byte, tool int, id, name string) []byte {
	b = t.closeBlock(b)
	b = event(b, "content_block_start")
	b = append(b, `{"type":"content_block_start","index":`...)
	b = strconv.AppendInt(b, int64(t.next), 10)
	if tool < 0 {
		b = append(b, `,"content_block":{"type":"text","text":""}}`+"\n\n"...)
	} else {
		b = append(b, `,"content_block":{"type":"tool_use","id":`...)
		b = llm.AppendJSONString(b, id)
		b = append(b, `,"name":`...)
		b = llm.AppendJSONString(b, name)
		b = append(b, `,"input":{}}}`+"\n\n"...)
	}
	t.next++
	t.open, t.openTool = true, tool
	if !t.pinged {
		t.pinged = true
		b = append(b, pingEvent...)
	}
	return b
}

func (t *translator) delta(b []byte, kind, field, text string) []byte {
	b = event(b, "content_block_delta")
	b = append(b, `{"type":"content_block_delta","index":`...)
	b = strconv.AppendInt(b, int64(t.next-1), 10)
	b = append(b, `,"delta":{"type":"`...)
	b = append(b, kind...)
	b = append(b, `","`...)
	b = append(b, field...)
	b = append(b, `":`...)
	b = llm.AppendJSONString(b, text)
	return append(b, "}}\n\n"...)
}

// chunk appends the events for one canonical chunk.
func (t *translator) chunk(b []byte, c *llm.Chunk) []byte {
	if !t.started {
		b = t.start(b)
	}
	if c.Usage != nil {
		t.usage, t.hasUsage = *c.Usage, true
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if ch.Index != 0 {
			continue // Anthropic has no n: only the first choice is relayed
		}
		if ch.HasContent && ch.Content != "" {
			if !t.open || t.openTool >= 0 {
				b = t.openBlock(b, -1, "", "")
			}
			b = t.delta(b, "text_delta", "text", ch.Content)
		}
		for _, tc := range ch.ToolCalls {
			if tc.ID != "" || (t.openTool != tc.Index && tc.Name != "") {
				b = t.openBlock(b, tc.Index, tc.ID, tc.Name)
			}
			if tc.Arguments != "" && t.open && t.openTool == tc.Index {
				b = t.delta(b, "input_json_delta", "partial_json", tc.Arguments)
			}
		}
		if ch.FinishReason != "" {
			// Chunk strings point into a buffer the next chunk reuses.
			t.stopReason = strings.Clone(ch.FinishReason)
		}
	}
	return b
}

// finish appends the events that end a message cleanly.
func (t *translator) finish(b []byte) []byte {
	if !t.started {
		b = t.start(b)
	}
	b = t.closeBlock(b)
	stop := t.stopReason
	if stop == "" {
		stop = llm.FinishStop
	}
	b = event(b, "message_delta")
	b = append(b, `{"type":"message_delta","delta":{"stop_reason":`...)
	b = llm.AppendJSONString(b, llm.FinishTo(llm.FormatAnthropic, stop))
	b = append(b, `,"stop_sequence":null},"usage":`...)
	if t.cached {
		b = appendCachedUsage(b, t.usage)
	} else {
		b = appendUsage(b, t.usage, t.hasUsage)
	}
	b = append(b, "}\n\n"...)
	b = event(b, "message_stop")
	return append(b, `{"type":"message_stop"}`+"\n\n"...)
}

// Chunk is api.StreamEncoder's: the events for one canonical chunk.
func (t *translator) Chunk(b []byte, c *llm.Chunk) ([]byte, error) {
	if c.Event != "" {
		// An Anthropic upstream's event, relayed as it came; the
		// message_stop that ends the stream is among them.
		t.passthrough = true
		if t.cached {
			return appendEvent(b, c.Event, t.markCachedEvent(c.Event, c.Raw)), nil
		}
		return appendEvent(b, c.Event, c.Raw), nil
	}
	if err := c.Parse(); err != nil {
		return b, err
	}
	return t.chunk(b, c), nil
}

// End appends the events that end a message cleanly; u is the stream's
// usage, when the chunks carried none.
func (t *translator) End(b []byte, u llm.Usage, hasUsage bool) []byte {
	if t.passthrough {
		return b // the upstream's own message_stop was relayed
	}
	if hasUsage && !t.hasUsage {
		t.usage, t.hasUsage = u, true
	}
	return t.finish(b)
}

// Error appends an error event; no message_stop follows.
func (t *translator) Error(b []byte, e *llm.Error) []byte {
	b = append(b, "event: error\ndata: "...)
	b = appendErrorBody(b, e, t.requestID)
	return append(b, '\n', '\n')
}

// Usage is the usage the chunks carried.
func (t *translator) Usage() (llm.Usage, bool) { return t.usage, t.hasUsage }

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
