package llm

import (
	"encoding/json"
	"fmt"
	"net/http"
	"unsafe"

	"github.com/tidwall/gjson"
)

// DecodeChatRequest decodes an OpenAI-format chat completions body into
// the typed request. It reads the body in one gjson pass per level
// instead of through encoding/json, a quarter of the cost on a 4 KB body
// (BenchmarkDecodeChatRequest), because every request that an OpenAI
// client sends to a translating adapter pays it. Raw fields (content,
// parameters, stop, tool_choice, response_format) point into body, which
// must not change afterwards. A field of the wrong type is a 400 that
// names it, as encoding/json's UnmarshalTypeError would.
func DecodeChatRequest(body []byte) (*ChatRequest, error) { return decodeChatRequest(body, true) }

func decodeChatRequest(body []byte, check bool) (*ChatRequest, error) {
	if check && !gjson.ValidBytes(body) {
		var v any
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body is not valid JSON.", Cause: json.Unmarshal(body, &v)}
	}
	top := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if !top.IsObject() {
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body must be a JSON object."}
	}
	c := &ChatRequest{}
	var e *Error
	top.ForEach(func(k, v gjson.Result) bool {
		if v.Type == gjson.Null {
			return true
		}
		switch k.Str {
		case "model":
			c.Model, e = str(v, "model")
		case "messages":
			e = decodeMessages(c, v)
		case "stream":
			c.Stream, e = boolean(v, "stream")
		case "stream_options":
			if !v.IsObject() {
				e = typeErr("stream_options", "an object")
				break
			}
			c.StreamOptions = &StreamOptions{}
			if iu := v.Get("include_usage"); iu.Exists() {
				c.StreamOptions.IncludeUsage, e = boolean(iu, "stream_options.include_usage")
			}
		case "max_tokens":
			c.MaxTokens, e = integer(v, "max_tokens")
		case "max_completion_tokens":
			c.MaxCompletionTokens, e = integer(v, "max_completion_tokens")
		case "n":
			c.N, e = integer(v, "n")
		case "top_logprobs":
			c.TopLogprobs, e = integer(v, "top_logprobs")
		case "temperature":
			c.Temperature, e = number(v, "temperature")
		case "top_p":
			c.TopP, e = number(v, "top_p")
		case "seed":
			var n *int
			if n, e = integer(v, "seed"); n != nil {
				s := int64(*n)
				c.Seed = &s
			}
		case "logprobs":
			var b bool
			if b, e = boolean(v, "logprobs"); e == nil {
				c.Logprobs = &b
			}
		case "user":
			c.User, e = str(v, "user")
		case "stop":
			c.Stop = view(v.Raw)
		case "tool_choice":
			c.ToolChoice = view(v.Raw)
		case "response_format":
			c.ResponseFormat = view(v.Raw)
		case "tools":
			e = decodeTools(c, v)
		}
		return e == nil
	})
	if e != nil {
		return nil, e
	}
	return c, nil
}

func view(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func typeErr(field, want string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: field,
		Message: fmt.Sprintf("Invalid type for '%s': expected %s.", field, want)}
}

func str(v gjson.Result, field string) (string, *Error) {
	if v.Type != gjson.String {
		return "", typeErr(field, "a string")
	}
	return v.Str, nil
}

func boolean(v gjson.Result, field string) (bool, *Error) {
	if v.Type != gjson.True && v.Type != gjson.False {
		return false, typeErr(field, "a boolean")
	}
	return v.Type == gjson.True, nil
}

func integer(v gjson.Result, field string) (*int, *Error) {
	if v.Type != gjson.Number || v.Num != float64(int64(v.Num)) {
		return nil, typeErr(field, "an integer")
	}
	n := int(v.Int())
	return &n, nil
}

func number(v gjson.Result, field string) (*float64, *Error) {
	if v.Type != gjson.Number {
		return nil, typeErr(field, "a number")
	}
	x := v.Num
	return &x, nil
}

func decodeMessages(c *ChatRequest, v gjson.Result) *Error {
	if !v.IsArray() {
		return typeErr("messages", "an array")
	}
	c.Messages = make([]Message, 0, 8)
	var e *Error
	i := 0
	v.ForEach(func(_, m gjson.Result) bool {
		n := i
		i++
		if !m.IsObject() {
			e = typeErr(fmt.Sprintf("messages[%d]", n), "an object")
			return false
		}
		var msg Message
		m.ForEach(func(k, f gjson.Result) bool {
			if f.Type == gjson.Null {
				if k.Str == "content" {
					msg.Content = json.RawMessage("null")
				}
				return true
			}
			switch k.Str {
			case "role":
				msg.Role, e = str(f, fmt.Sprintf("messages[%d].role", n))
			case "content":
				msg.Content = view(f.Raw)
			case "name":
				msg.Name, e = str(f, fmt.Sprintf("messages[%d].name", n))
			case "tool_call_id":
				msg.ToolCallID, e = str(f, fmt.Sprintf("messages[%d].tool_call_id", n))
			case "tool_calls":
				if !f.IsArray() {
					e = typeErr(fmt.Sprintf("messages[%d].tool_calls", n), "an array")
					break
				}
				f.ForEach(func(_, tc gjson.Result) bool {
					var call ToolCall
					tc.ForEach(func(k, x gjson.Result) bool {
						switch k.Str {
						case "id":
							call.ID = x.Str
						case "type":
							call.Type = x.Str
						case "function":
							x.ForEach(func(k, y gjson.Result) bool {
								switch k.Str {
								case "name":
									call.Function.Name = y.Str
								case "arguments":
									call.Function.Arguments = y.Str
								}
								return true
							})
						}
						return true
					})
					msg.ToolCalls = append(msg.ToolCalls, call)
					return true
				})
			}
			return e == nil
		})
		c.Messages = append(c.Messages, msg)
		return e == nil
	})
	return e
}

func decodeTools(c *ChatRequest, v gjson.Result) *Error {
	if !v.IsArray() {
		return typeErr("tools", "an array")
	}
	v.ForEach(func(_, t gjson.Result) bool {
		var tool Tool
		t.ForEach(func(k, x gjson.Result) bool {
			switch k.Str {
			case "type":
				tool.Type = x.Str
			case "function":
				if x.Type == gjson.Null {
					return true
				}
				fn := &FunctionDef{}
				x.ForEach(func(k, y gjson.Result) bool {
					switch k.Str {
					case "name":
						fn.Name = y.Str
					case "description":
						fn.Description = y.Str
					case "parameters":
						fn.Parameters = view(y.Raw)
					case "strict":
						if y.Type == gjson.True || y.Type == gjson.False {
							b := y.Type == gjson.True
							fn.Strict = &b
						}
					}
					return true
				})
				tool.Function = fn
			}
			return true
		})
		c.Tools = append(c.Tools, tool)
		return true
	})
	return nil
}
