package ollama

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strconv"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Ollama's answers are read with jsonscan: each body or stream line once,
// in order, into a small struct. A repeated key takes its last value.

// errBadAnswer is the error for an upstream body that is not what Ollama
// sends. It is retryable: nothing reached the client yet.
func errBadAnswer(what string) *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream answer is not " + what, Retryable: true}
}

// chatAnswer is what a chat answer, or one stream line, holds.
type chatAnswer struct {
	message    bool   // message is an object
	content    string // message.content, if a string
	calls      []llm.ToolCall
	done       bool
	reason     string
	model      string
	createdAt  string
	prompt     int64
	completion int64
	err        []byte // the error member's JSON text
	hasErr     bool
}

// read reads the object s holds next into a (which it resets, keeping
// the calls' memory). It reports the first syntax error.
func (a *chatAnswer) read(s *jsonscan.Scanner) error {
	*a = chatAnswer{calls: a.calls[:0]}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "message":
			a.readMessage(s)
		case "done":
			a.done = false
			if s.Peek() == jsonscan.Bool {
				a.done = s.Bool()
			} else {
				s.Skip()
			}
		case "done_reason":
			a.reason = s.OptStr()
		case "prompt_eval_count":
			a.prompt = s.LooseInt()
		case "eval_count":
			a.completion = s.LooseInt()
		case "model":
			a.model = s.OptStr()
		case "created_at":
			a.createdAt = s.OptStr()
		case "error":
			a.err, a.hasErr = s.Raw(), true
		}
		return true
	})
	return s.Err()
}

func (a *chatAnswer) readMessage(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		a.message = false
		return
	}
	a.message = true
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "content":
			a.content = s.OptStr()
		case "tool_calls":
			if s.Peek() != jsonscan.Array {
				s.Skip()
				return true
			}
			a.calls = a.calls[:0]
			s.Array(func(int) bool {
				a.calls = append(a.calls, readToolCall(s))
				return true
			})
		}
		return true
	})
}

// errText is an error member's text for the logs: a string's value,
// any other value's JSON.
func errText(raw []byte) string {
	s := jsonscan.New(raw)
	switch s.Peek() {
	case jsonscan.String:
		return s.Str()
	case jsonscan.Null:
		return ""
	}
	return string(raw)
}

// decodeChat translates a non-streamed /api/chat answer. Tool calls keep
// the ID Ollama gave them (servers since 0.12.10) or get a new one. A
// thinking model's message.thinking has no canonical field and is
// dropped. Strings point into b.
func decodeChat(b []byte, model string) (*llm.ChatCompletion, error) {
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		if s.Skip(); s.End() != nil {
			return nil, errBadAnswer("valid JSON")
		}
		return nil, errBadAnswer("a chat answer")
	}
	var a chatAnswer
	if a.read(s); s.End() != nil {
		return nil, errBadAnswer("valid JSON")
	}
	if a.hasErr {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream answer is an error", Retryable: true, Cause: errors.New(errText(a.err))}
	}
	if !a.message {
		return nil, errBadAnswer("a chat answer")
	}
	if a.model != "" {
		model = a.model
	}
	var calls []llm.ToolCall
	if len(a.calls) > 0 {
		calls = a.calls
	}
	am := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: calls}
	if text := a.content; text != "" || len(calls) == 0 {
		am.Content = &text
	}
	finish := llm.FinishFrom(llm.FormatOllama, a.reason)
	if len(calls) > 0 {
		finish = llm.FinishToolCalls
	} else if finish == "" {
		finish = llm.FinishStop
	}
	u := usage(a.prompt, a.completion)
	return &llm.ChatCompletion{
		ID:      newID("chatcmpl-"),
		Object:  "chat.completion",
		Created: unixTime(a.createdAt),
		Model:   model,
		Choices: []llm.Choice{{Message: am, FinishReason: finish, Logprobs: []byte("null")}},
		Usage:   &u,
	}, nil
}

// readToolCall reads one of Ollama's tool calls, whose arguments are an
// object rather than JSON text. A value that is not an object is a call
// with neither name nor arguments.
func readToolCall(s *jsonscan.Scanner) llm.ToolCall {
	tc := llm.ToolCall{Type: "function", Function: llm.FunctionCall{Arguments: "{}"}}
	if s.Peek() != jsonscan.Object {
		s.Skip()
		tc.ID = newID("call_")
		return tc
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "id":
			tc.ID = s.OptStr()
		case "function":
			tc.Function = llm.FunctionCall{Arguments: "{}"}
			if s.Peek() != jsonscan.Object {
				s.Skip()
				return true
			}
			s.Object(func(k []byte) bool {
				switch string(k) {
				case "name":
					tc.Function.Name = s.OptStr()
				case "arguments":
					switch s.Peek() {
					case jsonscan.String:
						tc.Function.Arguments = s.Str() // a proxy that already speaks OpenAI's shape
					case jsonscan.Object:
						tc.Function.Arguments = view(s.Raw())
					default:
						s.Skip()
						tc.Function.Arguments = "{}"
					}
				}
				return true
			})
		}
		return true
	})
	if tc.ID == "" {
		tc.ID = newID("call_")
	}
	return tc
}

func usage(prompt, completion int64) llm.Usage {
	return llm.Usage{PromptTokens: int(prompt), CompletionTokens: int(completion), TotalTokens: int(prompt + completion)}
}

// decodeEmbed translates an /api/embed answer to an OpenAI embeddings
// body. Floats are copied as Ollama wrote them; base64 is little-endian
// float32, as OpenAI encodes it.
func decodeEmbed(b []byte, model string, b64 bool) ([]byte, llm.Usage, error) {
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		if s.Skip(); s.End() != nil {
			return nil, llm.Usage{}, errBadAnswer("valid JSON")
		}
		return nil, llm.Usage{}, errBadAnswer("an embeddings answer")
	}
	const head = `{"object":"list","data":[`
	out := make([]byte, 0, len(b)+256)
	out = append(out, head...)
	var (
		raw         []byte
		embs, bad   bool
		prompt      int64
		answerModel string
	)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "model":
			answerModel = s.OptStr()
		case "prompt_eval_count":
			prompt = s.LooseInt()
		case "embeddings":
			out, embs, bad = out[:len(head)], s.Peek() == jsonscan.Array, false
			if !embs {
				s.Skip()
				return true
			}
			s.Array(func(i int) bool {
				if bad {
					return true // skipped: the rest must still be valid JSON
				}
				if s.Peek() != jsonscan.Array {
					bad = true
					return true
				}
				if i > 0 {
					out = append(out, ',')
				}
				out = append(out, `{"object":"embedding","index":`...)
				out = strconv.AppendInt(out, int64(i), 10)
				out = append(out, `,"embedding":`...)
				if b64 {
					raw = raw[:0]
					s.Array(func(int) bool {
						if bad || s.Peek() != jsonscan.Number {
							bad = true
							return true
						}
						f, err := strconv.ParseFloat(view(s.Raw()), 32)
						if err != nil {
							bad = true
							return true
						}
						raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(f)))
						return true
					})
					out = append(out, '"')
					out = base64.StdEncoding.AppendEncode(out, raw)
					out = append(out, '"')
				} else {
					out = append(out, '[')
					s.Array(func(n int) bool {
						if bad || s.Peek() != jsonscan.Number {
							bad = true
							return true
						}
						if n > 0 {
							out = append(out, ',')
						}
						out = append(out, s.Raw()...)
						return true
					})
					out = append(out, ']')
				}
				out = append(out, '}')
				return true
			})
		}
		return true
	})
	if s.End() != nil {
		return nil, llm.Usage{}, errBadAnswer("valid JSON")
	}
	if !embs || bad {
		return nil, llm.Usage{}, errBadAnswer("an embeddings answer")
	}
	if answerModel != "" {
		model = answerModel
	}
	u := usage(prompt, 0)
	out = append(out, `],"model":`...)
	out = llm.AppendJSONString(out, model)
	out = append(out, `,"usage":{"prompt_tokens":`...)
	out = strconv.AppendInt(out, int64(u.PromptTokens), 10)
	out = append(out, `,"total_tokens":`...)
	out = strconv.AppendInt(out, int64(u.TotalTokens), 10)
	out = append(out, "}}"...)
	return out, u, nil
}

// view is b as a string without a copy; b must not change while it is used.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
