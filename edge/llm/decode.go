package llm

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// DecodeChatRequest decodes an OpenAI-format chat completions body into
// the typed request. It reads the body in one pass (jsonscan) instead of
// through encoding/json, several times faster on a 4 KB body
// (BenchmarkDecodeChatRequest), because every request that an OpenAI
// client sends to a translating adapter pays it. Strings and raw fields
// (content, parameters, stop, tool_choice, response_format) point into
// body, which must not change afterwards. A field of the wrong type is a
// 400 that names it, as encoding/json's UnmarshalTypeError would.
func DecodeChatRequest(body []byte) (*ChatRequest, error) {
	s := jsonscan.New(body)
	if s.Peek() != jsonscan.Object {
		s.Skip()
		if s.Err() != nil {
			return nil, syntaxErr(s.Err())
		}
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body must be a JSON object."}
	}
	c := &ChatRequest{HasExtra: true}
	var e *Error
	s.Object(func(k []byte) bool {
		if s.Peek() == jsonscan.Null {
			if !chatKey(k) {
				c.Extra = append(c.Extra, Field{Name: string(k), Raw: s.Raw()})
			} else {
				s.Null()
			}
			return s.Err() == nil
		}
		switch string(k) {
		case "model":
			c.Model, e = str(s, "model")
		case "messages":
			e = decodeMessages(s, c)
		case "stream":
			c.Stream, e = boolean(s, "stream")
		case "stream_options":
			if s.Peek() != jsonscan.Object {
				e = typeErr("stream_options", "an object")
				break
			}
			c.StreamOptions = &StreamOptions{}
			s.Object(func(k []byte) bool {
				if string(k) == "include_usage" && s.Peek() != jsonscan.Null {
					c.StreamOptions.IncludeUsage, e = boolean(s, "stream_options.include_usage")
				}
				return e == nil
			})
		case "max_tokens":
			c.MaxTokens, e = integer(s, "max_tokens")
		case "max_completion_tokens":
			c.MaxCompletionTokens, e = integer(s, "max_completion_tokens")
		case "n":
			c.N, e = integer(s, "n")
		case "top_logprobs":
			c.TopLogprobs, e = integer(s, "top_logprobs")
		case "temperature":
			c.Temperature, e = number(s, "temperature")
		case "top_p":
			c.TopP, e = number(s, "top_p")
		case "seed":
			var n *int
			if n, e = integer(s, "seed"); n != nil {
				v := int64(*n)
				c.Seed = &v
			}
		case "logprobs":
			var b bool
			if b, e = boolean(s, "logprobs"); e == nil {
				c.Logprobs = &b
			}
		case "user":
			c.User, e = str(s, "user")
		case "stop":
			c.Stop = s.Raw()
		case "tool_choice":
			c.ToolChoice = s.Raw()
		case "response_format":
			c.ResponseFormat = s.Raw()
		case "tools":
			e = decodeTools(s, c)
		default:
			c.Extra = append(c.Extra, Field{Name: string(k), Raw: s.Raw()})
		}
		return e == nil
	})
	if e != nil {
		// A body that is not JSON at all is a syntax error, wherever a
		// wrong type stopped the walk before its broken part.
		v := jsonscan.New(body)
		if v.Skip(); v.End() != nil {
			return nil, syntaxErr(v.Err())
		}
		return nil, e
	}
	if err := s.End(); err != nil {
		return nil, syntaxErr(err)
	}
	return c, nil
}

// chatKey reports whether DecodeChatRequest reads the top-level field k.
func chatKey(k []byte) bool {
	switch string(k) {
	case "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "top_logprobs",
		"temperature", "top_p", "seed", "logprobs", "user", "stop", "tool_choice", "response_format", "tools":
		return true
	}
	return false
}

// fields walks the object at s, calling each with the key of every field
// whose value is not null, until each returns false. A null field is an
// absent one, as encoding/json reads it, and a null object is one without
// fields. It reports false, reading nothing, when the value is neither an
// object nor null. The chat decode and Message.Parts share it: every
// object inside a message or a tool is read this way.
func fields(s *jsonscan.Scanner, each func(k []byte) bool) bool {
	switch s.Peek() {
	case jsonscan.Null:
		s.Null()
		return true
	case jsonscan.Object:
		s.Object(func(k []byte) bool {
			if s.Peek() == jsonscan.Null {
				s.Null()
				return true
			}
			return each(k)
		})
		return true
	}
	return false
}

func syntaxErr(err error) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body is not valid JSON: " + err.Error(), Cause: err}
}

func typeErr(field, want string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: field,
		Message: fmt.Sprintf("Invalid type for '%s': expected %s.", field, want)}
}

func str(s *jsonscan.Scanner, field string) (string, *Error) {
	if s.Peek() != jsonscan.String {
		return "", typeErr(field, "a string")
	}
	return s.Str(), nil
}

// msgStr, callStr and toolStr read a string inside the messages or
// tools arrays, naming the field only when it is wrong: formatting the
// name for every field would cost more than reading it.
func msgStr(s *jsonscan.Scanner, n int, field string) (string, *Error) {
	if s.Peek() != jsonscan.String {
		return "", typeErr(fmt.Sprintf("messages[%d]%s", n, field), "a string")
	}
	return s.Str(), nil
}

func callStr(s *jsonscan.Scanner, n, j int, field string) (string, *Error) {
	if s.Peek() != jsonscan.String {
		return "", typeErr(fmt.Sprintf("messages[%d].tool_calls[%d]%s", n, j, field), "a string")
	}
	return s.Str(), nil
}

func toolStr(s *jsonscan.Scanner, n int, field string) (string, *Error) {
	if s.Peek() != jsonscan.String {
		return "", typeErr(fmt.Sprintf("tools[%d]%s", n, field), "a string")
	}
	return s.Str(), nil
}

func boolean(s *jsonscan.Scanner, field string) (bool, *Error) {
	if s.Peek() != jsonscan.Bool {
		return false, typeErr(field, "a boolean")
	}
	return s.Bool(), nil
}

func integer(s *jsonscan.Scanner, field string) (*int, *Error) {
	if s.Peek() != jsonscan.Number {
		return nil, typeErr(field, "an integer")
	}
	n, ok := s.Int()
	if !ok {
		return nil, typeErr(field, "an integer")
	}
	v := int(n)
	return &v, nil
}

func number(s *jsonscan.Scanner, field string) (*float64, *Error) {
	if s.Peek() != jsonscan.Number {
		return nil, typeErr(field, "a number")
	}
	x := s.Float()
	return &x, nil
}

// MaxMessages bounds a chat request's messages, and the tool calls of
// all its messages together. The decoder stops there, so a body of a
// million empty messages (or calls) costs no more than its first ten
// thousand.
const MaxMessages = 10_000

func decodeMessages(s *jsonscan.Scanner, c *ChatRequest) *Error {
	if s.Peek() != jsonscan.Array {
		return typeErr("messages", "an array")
	}
	c.Messages = make([]Message, 0, 8)
	var e *Error
	calls := 0
	s.Array(func(n int) bool {
		if n >= MaxMessages {
			e = &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: "messages",
				Message: fmt.Sprintf("'messages' holds more than %d messages.", MaxMessages)}
			return false
		}
		if s.Peek() != jsonscan.Object {
			if s.Peek() == jsonscan.Null {
				s.Null()
				c.Messages = append(c.Messages, Message{})
				return true
			}
			e = typeErr(fmt.Sprintf("messages[%d]", n), "an object")
			return false
		}
		var msg Message
		s.Object(func(k []byte) bool {
			if s.Peek() == jsonscan.Null {
				s.Null()
				if string(k) == "content" {
					msg.Content = json.RawMessage("null")
				}
				return true
			}
			switch string(k) {
			case "role":
				msg.Role, e = msgStr(s, n, ".role")
			case "content":
				msg.Content = s.Raw()
			case "name":
				msg.Name, e = msgStr(s, n, ".name")
			case "tool_call_id":
				msg.ToolCallID, e = msgStr(s, n, ".tool_call_id")
			case "tool_calls":
				if s.Peek() != jsonscan.Array {
					e = typeErr(fmt.Sprintf("messages[%d].tool_calls", n), "an array")
					break
				}
				s.Array(func(j int) bool {
					if calls++; calls > MaxMessages {
						e = &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: fmt.Sprintf("messages[%d].tool_calls", n),
							Message: fmt.Sprintf("The messages hold more than %d tool calls.", MaxMessages)}
						return false
					}
					var call ToolCall
					e = decodeToolCall(s, &call, n, j)
					msg.ToolCalls = append(msg.ToolCalls, call)
					return e == nil
				})
			}
			return e == nil
		})
		c.Messages = append(c.Messages, msg)
		return e == nil
	})
	return e
}

func decodeToolCall(s *jsonscan.Scanner, call *ToolCall, n, j int) *Error {
	var e *Error
	if !fields(s, func(k []byte) bool {
		switch string(k) {
		case "id":
			call.ID, e = callStr(s, n, j, ".id")
		case "type":
			call.Type, e = callStr(s, n, j, ".type")
		case "function":
			if !fields(s, func(k []byte) bool {
				switch string(k) {
				case "name":
					call.Function.Name, e = callStr(s, n, j, ".function.name")
				case "arguments":
					call.Function.Arguments, e = callStr(s, n, j, ".function.arguments")
				}
				return e == nil
			}) {
				e = typeErr(fmt.Sprintf("messages[%d].tool_calls[%d].function", n, j), "an object")
			}
		}
		return e == nil
	}) {
		return typeErr(fmt.Sprintf("messages[%d].tool_calls[%d]", n, j), "an object")
	}
	return e
}

func decodeTools(s *jsonscan.Scanner, c *ChatRequest) *Error {
	if s.Peek() != jsonscan.Array {
		return typeErr("tools", "an array")
	}
	c.Tools = nil // a repeated key takes its last value
	var e *Error
	s.Array(func(n int) bool {
		var tool Tool
		if !fields(s, func(k []byte) bool {
			switch string(k) {
			case "type":
				tool.Type, e = toolStr(s, n, ".type")
			case "function":
				fn := &FunctionDef{}
				if !fields(s, func(k []byte) bool {
					switch string(k) {
					case "name":
						fn.Name, e = toolStr(s, n, ".function.name")
					case "description":
						fn.Description, e = toolStr(s, n, ".function.description")
					case "parameters":
						fn.Parameters = s.Raw()
					case "strict":
						var b bool
						if s.Peek() != jsonscan.Bool {
							e = typeErr(fmt.Sprintf("tools[%d].function.strict", n), "a boolean")
						} else {
							b = s.Bool()
							fn.Strict = &b
						}
					}
					return e == nil
				}) {
					e = typeErr(fmt.Sprintf("tools[%d].function", n), "an object")
					break
				}
				tool.Function = fn
			}
			return e == nil
		}) {
			e = typeErr(fmt.Sprintf("tools[%d]", n), "an object")
			return false
		}
		c.Tools = append(c.Tools, tool)
		return e == nil
	})
	return e
}
