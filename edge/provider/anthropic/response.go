package anthropic

import (
	"encoding/json"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// idPrefix starts every completion ID, so clients that check OpenAI's
// ID shape accept it; the rest is Anthropic's message ID, which keeps
// the answer traceable in Anthropic's console.
const idPrefix = "chatcmpl-"

// badAnswer is the error for a 200 answer that is not a Messages
// response: nothing reached the client, so another target may serve it.
func badAnswer(provider string) *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true,
		Message: "upstream provider " + provider + " sent an answer that is not a Messages response"}
}

// decodeMessage translates a non-streamed Messages response into a chat
// completion. Text blocks are joined into the content; tool_use blocks
// become tool calls whose arguments are the input as compact JSON.
// Other blocks (thinking, server tools' results) have no OpenAI
// counterpart and are dropped. model names the answer when Anthropic's
// does not. The body is read once (jsonscan); the completion's strings
// may point into b, which must not change afterwards.
func decodeMessage(provider string, b []byte, model string, created int64) (*llm.ChatCompletion, error) {
	var a answer
	if !a.read(b, true) {
		return nil, badAnswer(provider)
	}
	if a.typ == "error" {
		return nil, eventError(provider, a.err)
	}
	if !a.content {
		return nil, badAnswer(provider)
	}
	msg := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: a.calls}
	if s := a.text(); s != "" || len(a.calls) == 0 {
		msg.Content = &s // OpenAI's content is null only beside tool calls
	}
	if a.model != "" {
		model = a.model
	}
	usage := a.usage.usage()
	return &llm.ChatCompletion{
		ID:      idPrefix + a.id,
		Object:  "chat.completion",
		Created: created,
		Model:   model,
		Choices: []llm.Choice{{
			Message:      msg,
			FinishReason: finish(a.stopReason, len(a.calls) > 0),
			Logprobs:     json.RawMessage("null"),
		}},
		Usage: &usage,
	}, nil
}

// answer is what a non-streamed Messages answer (or an error body sent
// with status 200) holds for the gateway.
type answer struct {
	typ, id, model, stopReason string
	err                        apiError
	usage                      counts
	content                    bool // content is an array
	// The content's text is first, or first followed by more when the
	// answer has several text blocks.
	first string
	more  []byte
	calls []llm.ToolCall
}

// read reads b, which must be one JSON object, in one pass. withContent
// says whether the content blocks are wanted or only checked. It
// reports false for a body that is not a JSON object.
func (a *answer) read(b []byte, withContent bool) bool {
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		return false
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			a.typ = s.OptStr()
		case "id":
			a.id = s.OptStr()
		case "model":
			a.model = s.OptStr()
		case "stop_reason":
			a.stopReason = s.OptStr()
		case "error":
			a.err.read(s)
		case "usage":
			a.usage.read(s)
		case "content":
			if a.content = s.Peek() == jsonscan.Array; !a.content || !withContent {
				return true
			}
			a.first, a.more, a.calls = "", a.more[:0], a.calls[:0]
			s.Array(func(int) bool {
				a.block(s)
				return true
			})
		}
		return true
	})
	return s.End() == nil
}

// block reads one content block. Its type may come after its other
// fields, so they are all read first.
func (a *answer) block(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		return // skipped by the scanner
	}
	var typ, text, id, name string
	var input []byte
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			typ = s.OptStr()
		case "text":
			text = s.OptStr()
		case "id":
			id = s.OptStr()
		case "name":
			name = s.OptStr()
		case "input":
			input = s.Raw()
		}
		return true
	})
	switch typ {
	case "text":
		switch {
		case text == "":
		case a.first == "" && len(a.more) == 0:
			a.first = text
		default:
			if len(a.more) == 0 {
				a.more = append(a.more, a.first...)
			}
			a.more = append(a.more, text...)
		}
	case "tool_use":
		a.calls = append(a.calls, llm.ToolCall{
			ID:       id,
			Type:     "function",
			Function: llm.FunctionCall{Name: name, Arguments: compactJSON(input)},
		})
	}
}

// text is the content's text, its text blocks joined.
func (a *answer) text() string {
	if len(a.more) > 0 {
		return string(a.more)
	}
	return a.first
}

// finish maps Anthropic's stop reason. A missing one is a turn that
// simply ended, since OpenAI's clients expect a reason on every answer.
func finish(reason string, calledTools bool) string {
	if reason == "" {
		if calledTools {
			return llm.FinishToolCalls
		}
		return llm.FinishStop
	}
	return llm.FinishFrom(llm.FormatAnthropic, reason)
}

// tokens are Anthropic's usage counts. Prompt caching splits the input
// into uncached, cache-read and cache-written tokens; OpenAI's
// prompt_tokens counts them all.
type tokens struct {
	in, cacheRead, cacheWrite, out int
}

// counts is one usage object as read: the counts it reports and which
// of them it holds.
type counts struct {
	tokens
	has    uint8 // hasIn, hasCacheRead, hasCacheWrite, hasOut
	object bool  // the value was an object
}

const (
	hasIn = 1 << iota
	hasCacheRead
	hasCacheWrite
	hasOut
)

// read reads a usage object; any other value is skipped.
func (c *counts) read(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return
	}
	c.object = true
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "input_tokens":
			c.in, c.has = int(s.LooseInt()), c.has|hasIn
		case "cache_read_input_tokens":
			c.cacheRead, c.has = int(s.LooseInt()), c.has|hasCacheRead
		case "cache_creation_input_tokens":
			c.cacheWrite, c.has = int(s.LooseInt()), c.has|hasCacheWrite
		case "output_tokens":
			c.out, c.has = int(s.LooseInt()), c.has|hasOut
		}
		return true
	})
}

// apply takes the counts c holds. Counts are cumulative, and a
// message_delta reports only some of them, so absent ones are kept.
func (t *tokens) apply(c *counts) {
	if c.has&hasIn != 0 {
		t.in = c.in
	}
	if c.has&hasCacheRead != 0 {
		t.cacheRead = c.cacheRead
	}
	if c.has&hasCacheWrite != 0 {
		t.cacheWrite = c.cacheWrite
	}
	if c.has&hasOut != 0 {
		t.out = c.out
	}
}

func (t *tokens) usage() llm.Usage {
	p := t.in + t.cacheRead + t.cacheWrite
	return llm.Usage{PromptTokens: p, CompletionTokens: t.out, TotalTokens: p + t.out}
}

// compactJSON returns a tool input, a checked JSON value, as compact
// JSON text, "{}" when there is none: OpenAI clients parse arguments as
// JSON.
func compactJSON(raw []byte) string {
	if len(raw) == 0 || string(raw) == "null" {
		return "{}"
	}
	var out []byte // nil until the first insignificant space
	last := 0
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			for i++; i < len(raw) && raw[i] != '"'; i++ {
				if raw[i] == '\\' {
					i++
				}
			}
		case ' ', '\t', '\n', '\r':
			out = append(out, raw[last:i]...)
			last = i + 1
		}
	}
	if out == nil && last == 0 {
		return view(raw)
	}
	return string(append(out, raw[last:]...))
}
