package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// decodeCompletion reads a non-streamed OpenAI-format chat answer into
// c in one pass (jsonscan), as ChatCompletion did with encoding/json and
// with the same result: names match as encoding/json matches them
// (exactly, else ignoring case, escapes decoded), null leaves a string
// or number as it was and clears a pointer or slice, a name met twice
// decodes into what the first left, unknown members are skipped, and
// any syntax error or value of the wrong kind fails the whole answer.
// Strings and Logprobs point into body, which must not change
// afterwards. It is several times faster than encoding/json
// (BenchmarkChatCompletion); every translating surface pays it for an
// OpenAI-format upstream's answer.
//
// It departs from encoding/json in one place: nesting deeper than
// jsonscan.MaxDepth (512, against 10,000) is an error.
func decodeCompletion(body []byte, c *ChatCompletion) error {
	s := jsonscan.New(body)
	d := completionDecoder{s: s}
	switch s.Peek() {
	case jsonscan.Null:
		s.Null()
	case jsonscan.Object:
		d.completion(c)
	default:
		s.Skip()
		if s.Err() == nil {
			d.wrong("the answer", "an object")
		}
	}
	if err := s.End(); err != nil {
		return err
	}
	return d.err
}

// completionDecoder holds the scanner and the first wrong-kind error.
type completionDecoder struct {
	s   *jsonscan.Scanner
	err error
}

// errWrongKind is the cause of an answer with a value of the wrong kind.
var errWrongKind = errors.New("llm: value of the wrong kind in a chat completion")

func (d *completionDecoder) wrong(field, want string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s is not %s", errWrongKind, field, want)
	}
}

// ok reports whether the walk may go on.
func (d *completionDecoder) ok() bool { return d.err == nil && d.s.Err() == nil }

// Member names of each object, as encoding/json knows them from the
// types' tags.
var (
	completionNames = []string{"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
	choiceNames     = []string{"index", "message", "logprobs", "finish_reason"}
	messageNames    = []string{"role", "content", "tool_calls", "refusal"}
	callNames       = []string{"id", "type", "function"}
	functionNames   = []string{"name", "arguments"}
	usageNames      = []string{"prompt_tokens", "completion_tokens", "total_tokens"}
)

// name returns which of names the key k is, or "": an exact match, else
// one that ignores case, after decoding escapes.
func name(k []byte, names []string) string {
	key := unsafe.String(unsafe.SliceData(k), len(k))
	for _, n := range names {
		if key == n {
			return n
		}
	}
	if bytes.IndexByte(k, '\\') >= 0 {
		q := make([]byte, 0, len(k)+2)
		q = append(append(append(q, '"'), k...), '"')
		k = []byte(jsonscan.New(q).Str())
	}
	for _, n := range names {
		if bytes.EqualFold(k, []byte(n)) {
			return n
		}
	}
	return ""
}

func (d *completionDecoder) completion(c *ChatCompletion) {
	s := d.s
	s.Object(func(k []byte) bool {
		switch name(k, completionNames) {
		case "id":
			d.str(&c.ID, "id")
		case "object":
			d.str(&c.Object, "object")
		case "created":
			d.int64(&c.Created, "created")
		case "model":
			d.str(&c.Model, "model")
		case "system_fingerprint":
			d.str(&c.SystemFingerprint, "system_fingerprint")
		case "usage":
			switch s.Peek() {
			case jsonscan.Null:
				s.Null()
				c.Usage = nil
			case jsonscan.Object:
				if c.Usage == nil {
					c.Usage = &Usage{}
				}
				d.usage(c.Usage)
			default:
				d.wrong("usage", "an object")
			}
		case "choices":
			switch s.Peek() {
			case jsonscan.Null:
				s.Null()
				c.Choices = nil
			case jsonscan.Array:
				c.Choices = elements(d, c.Choices, d.choice)
			default:
				d.wrong("choices", "an array")
			}
		}
		return d.ok()
	})
}

// elements decodes an array into list as encoding/json does: element i
// into list[i] when the list already had one, the list cut to the
// array's length, an empty array an empty (not nil) list.
func elements[T any](d *completionDecoder, list []T, each func(*T)) []T {
	n := 0
	d.s.Array(func(i int) bool {
		if i >= len(list) {
			var zero T
			list = append(list, zero)
		}
		if d.s.Peek() == jsonscan.Null {
			d.s.Null()
		} else {
			each(&list[i])
		}
		n = i + 1
		return d.ok()
	})
	if n == 0 {
		return []T{}
	}
	return list[:n]
}

func (d *completionDecoder) choice(ch *Choice) {
	s := d.s
	if s.Peek() != jsonscan.Object {
		d.wrong("choices[]", "an object")
		return
	}
	s.Object(func(k []byte) bool {
		switch name(k, choiceNames) {
		case "index":
			var n int64
			if d.int64(&n, "choices[].index") {
				ch.Index = int(n)
			}
		case "message":
			switch s.Peek() {
			case jsonscan.Null:
				s.Null()
			case jsonscan.Object:
				d.message(&ch.Message)
			default:
				d.wrong("choices[].message", "an object")
			}
		case "logprobs":
			ch.Logprobs = json.RawMessage(s.Raw())
		case "finish_reason":
			d.str(&ch.FinishReason, "choices[].finish_reason")
		}
		return d.ok()
	})
}

func (d *completionDecoder) message(m *AnswerMessage) {
	s := d.s
	s.Object(func(k []byte) bool {
		switch name(k, messageNames) {
		case "role":
			d.str(&m.Role, "message.role")
		case "content":
			d.strPtr(&m.Content, "message.content")
		case "refusal":
			d.strPtr(&m.Refusal, "message.refusal")
		case "tool_calls":
			switch s.Peek() {
			case jsonscan.Null:
				s.Null()
				m.ToolCalls = nil
			case jsonscan.Array:
				m.ToolCalls = elements(d, m.ToolCalls, d.toolCall)
			default:
				d.wrong("message.tool_calls", "an array")
			}
		}
		return d.ok()
	})
}

func (d *completionDecoder) toolCall(tc *ToolCall) {
	s := d.s
	if s.Peek() != jsonscan.Object {
		d.wrong("message.tool_calls[]", "an object")
		return
	}
	s.Object(func(k []byte) bool {
		switch name(k, callNames) {
		case "id":
			d.str(&tc.ID, "tool_calls[].id")
		case "type":
			d.str(&tc.Type, "tool_calls[].type")
		case "function":
			switch s.Peek() {
			case jsonscan.Null:
				s.Null()
			case jsonscan.Object:
				s.Object(func(k []byte) bool {
					switch name(k, functionNames) {
					case "name":
						d.str(&tc.Function.Name, "function.name")
					case "arguments":
						d.str(&tc.Function.Arguments, "function.arguments")
					}
					return d.ok()
				})
			default:
				d.wrong("tool_calls[].function", "an object")
			}
		}
		return d.ok()
	})
}

func (d *completionDecoder) usage(u *Usage) {
	s := d.s
	s.Object(func(k []byte) bool {
		var f *int
		switch name(k, usageNames) {
		case "prompt_tokens":
			f = &u.PromptTokens
		case "completion_tokens":
			f = &u.CompletionTokens
		case "total_tokens":
			f = &u.TotalTokens
		default:
			return true
		}
		var n int64
		if d.int64(&n, "usage") {
			*f = int(n)
		}
		return d.ok()
	})
}

// str reads a string member; null leaves it as it was.
func (d *completionDecoder) str(f *string, field string) {
	switch d.s.Peek() {
	case jsonscan.Null:
		d.s.Null()
	case jsonscan.String:
		*f = d.s.Str()
	default:
		d.wrong(field, "a string")
	}
}

// strPtr reads a string member that may be null (nil).
func (d *completionDecoder) strPtr(f **string, field string) {
	switch d.s.Peek() {
	case jsonscan.Null:
		d.s.Null()
		*f = nil
	case jsonscan.String:
		v := d.s.Str()
		*f = &v
	default:
		d.wrong(field, "a string")
	}
}

// int64 reads an integer member; null leaves it as it was. It reports
// whether it set n.
func (d *completionDecoder) int64(n *int64, field string) bool {
	switch d.s.Peek() {
	case jsonscan.Null:
		d.s.Null()
	case jsonscan.Number:
		v, ok := d.s.Int()
		if !ok {
			d.wrong(field, "an integer")
			return false
		}
		*n = v
		return true
	default:
		d.wrong(field, "an integer")
	}
	return false
}

// errNotCompletion is the error of an answer that is not a chat
// completion: the upstream's fault, so another target may do better.
func errNotCompletion(cause error) *Error {
	return &Error{Status: http.StatusBadGateway, Type: TypeUpstream, Message: "upstream answer is not a chat completion", Retryable: true, Cause: cause}
}
