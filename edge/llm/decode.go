package llm

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tidwall/gjson"
)

// DecodeChatRequest decodes an OpenAI-format chat completions body into
// the typed request. It checks the body once and walks it once with
// gjson (see json.go), several times faster than encoding/json on a 4 KB
// body (BenchmarkDecodeChatRequest), because every request that an
// OpenAI client sends to a translating adapter pays it. Strings and raw
// fields (content, parameters, stop, tool_choice, response_format) point
// into body, which must not change afterwards. A field of the wrong type
// is a 400 that names it, as encoding/json's UnmarshalTypeError would.
func DecodeChatRequest(body []byte) (*ChatRequest, error) {
	top, err := Check(body)
	if err != nil {
		return nil, syntaxErr(err)
	}
	c, e := DecodeChatValue(body, top)
	if e != nil {
		return nil, e
	}
	return c, nil
}

// DecodeChatValue decodes the checked (Check) body whose view is top,
// for a caller that has already walked it once and must not check it
// again.
func DecodeChatValue(body []byte, top gjson.Result) (*ChatRequest, *Error) {
	if !top.IsObject() {
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body must be a JSON object."}
	}
	c := &ChatRequest{}
	var e *Error
	top.ForEach(func(k, v gjson.Result) bool {
		e = c.field(body, k.Str, v)
		return e == nil
	})
	if e != nil {
		return nil, e
	}
	return c, nil
}

// field reads one top-level field of a chat request.
func (c *ChatRequest) field(body []byte, k string, v gjson.Result) (e *Error) {
	if v.Type == gjson.Null {
		return nil
	}
	switch k {
	case "model":
		c.Model, e = strField(v, "model")
	case "messages":
		e = decodeMessages(body, v, c)
	case "stream":
		c.Stream, e = boolean(v, "stream")
	case "stream_options":
		if !v.IsObject() {
			return typeErr("stream_options", "an object")
		}
		c.StreamOptions = &StreamOptions{}
		v.ForEach(func(k, v gjson.Result) bool {
			if k.Str == "include_usage" && v.Type != gjson.Null {
				c.StreamOptions.IncludeUsage, e = boolean(v, "stream_options.include_usage")
			}
			return e == nil
		})
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
			x := int64(*n)
			c.Seed = &x
		}
	case "logprobs":
		var b bool
		if b, e = boolean(v, "logprobs"); e == nil {
			c.Logprobs = &b
		}
	case "user":
		c.User, e = strField(v, "user")
	case "stop":
		c.Stop = RawBytes(body, v)
	case "tool_choice":
		c.ToolChoice = RawBytes(body, v)
	case "response_format":
		c.ResponseFormat = RawBytes(body, v)
	case "tools":
		e = decodeTools(body, v, c)
	}
	return e
}

func syntaxErr(err error) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Message: "The request body is not valid JSON: " + err.Error(), Cause: err}
}

func typeErr(field, want string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: field,
		Message: fmt.Sprintf("Invalid type for '%s': expected %s.", field, want)}
}

func strField(v gjson.Result, field string) (string, *Error) {
	if v.Type != gjson.String {
		return "", typeErr(field, "a string")
	}
	return v.Str, nil
}

// msgStr, callStr and toolStr read a string inside the messages or
// tools arrays, naming the field only when it is wrong: formatting the
// name for every field would cost more than reading it.
func msgStr(v gjson.Result, n int, field string) (string, *Error) {
	if v.Type != gjson.String {
		return "", typeErr(fmt.Sprintf("messages[%d]%s", n, field), "a string")
	}
	return v.Str, nil
}

func callStr(v gjson.Result, n, j int, field string) (string, *Error) {
	if v.Type != gjson.String {
		return "", typeErr(fmt.Sprintf("messages[%d].tool_calls[%d]%s", n, j, field), "a string")
	}
	return v.Str, nil
}

func toolStr(v gjson.Result, n int, field string) (string, *Error) {
	if v.Type != gjson.String {
		return "", typeErr(fmt.Sprintf("tools[%d]%s", n, field), "a string")
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
	n, ok := Int(v)
	if !ok {
		return nil, typeErr(field, "an integer")
	}
	x := int(n)
	return &x, nil
}

func number(v gjson.Result, field string) (*float64, *Error) {
	if v.Type != gjson.Number {
		return nil, typeErr(field, "a number")
	}
	x := v.Num
	return &x, nil
}

func decodeMessages(body []byte, v gjson.Result, c *ChatRequest) *Error {
	if !v.IsArray() {
		return typeErr("messages", "an array")
	}
	c.Messages = make([]Message, 0, 8)
	var e *Error
	n := 0
	v.ForEach(func(_, m gjson.Result) bool {
		defer func() { n++ }()
		if !m.IsObject() {
			if m.Type == gjson.Null {
				c.Messages = append(c.Messages, Message{})
				return true
			}
			e = typeErr(fmt.Sprintf("messages[%d]", n), "an object")
			return false
		}
		c.Messages = append(c.Messages, Message{})
		msg := &c.Messages[len(c.Messages)-1]
		m.ForEach(func(k, v gjson.Result) bool {
			if v.Type == gjson.Null {
				if k.Str == "content" {
					msg.Content = json.RawMessage("null")
				}
				return true
			}
			switch k.Str {
			case "role":
				msg.Role, e = msgStr(v, n, ".role")
			case "content":
				msg.Content = RawBytes(body, v)
			case "name":
				msg.Name, e = msgStr(v, n, ".name")
			case "tool_call_id":
				msg.ToolCallID, e = msgStr(v, n, ".tool_call_id")
			case "tool_calls":
				if !v.IsArray() {
					e = typeErr(fmt.Sprintf("messages[%d].tool_calls", n), "an array")
					break
				}
				j := 0
				v.ForEach(func(_, t gjson.Result) bool {
					var call ToolCall
					e = decodeToolCall(t, &call, n, j)
					msg.ToolCalls = append(msg.ToolCalls, call)
					j++
					return e == nil
				})
			}
			return e == nil
		})
		return e == nil
	})
	return e
}

func decodeToolCall(v gjson.Result, call *ToolCall, n, j int) *Error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return typeErr(fmt.Sprintf("messages[%d].tool_calls[%d]", n, j), "an object")
	}
	var e *Error
	v.ForEach(func(k, v gjson.Result) bool {
		if v.Type == gjson.Null {
			return true
		}
		switch k.Str {
		case "id":
			call.ID, e = callStr(v, n, j, ".id")
		case "type":
			call.Type, e = callStr(v, n, j, ".type")
		case "function":
			if !v.IsObject() {
				e = typeErr(fmt.Sprintf("messages[%d].tool_calls[%d].function", n, j), "an object")
				break
			}
			v.ForEach(func(k, v gjson.Result) bool {
				if v.Type == gjson.Null {
					return true
				}
				switch k.Str {
				case "name":
					call.Function.Name, e = callStr(v, n, j, ".function.name")
				case "arguments":
					call.Function.Arguments, e = callStr(v, n, j, ".function.arguments")
				}
				return e == nil
			})
		}
		return e == nil
	})
	return e
}

func decodeTools(body []byte, v gjson.Result, c *ChatRequest) *Error {
	if !v.IsArray() {
		return typeErr("tools", "an array")
	}
	var e *Error
	n := 0
	v.ForEach(func(_, t gjson.Result) bool {
		defer func() { n++ }()
		var tool Tool
		if t.Type == gjson.Null {
			c.Tools = append(c.Tools, tool)
			return true
		}
		if !t.IsObject() {
			e = typeErr(fmt.Sprintf("tools[%d]", n), "an object")
			return false
		}
		t.ForEach(func(k, v gjson.Result) bool {
			if v.Type == gjson.Null {
				return true
			}
			switch k.Str {
			case "type":
				tool.Type, e = toolStr(v, n, ".type")
			case "function":
				if !v.IsObject() {
					e = typeErr(fmt.Sprintf("tools[%d].function", n), "an object")
					break
				}
				fn := &FunctionDef{}
				v.ForEach(func(k, v gjson.Result) bool {
					if v.Type == gjson.Null {
						return true
					}
					switch k.Str {
					case "name":
						fn.Name, e = toolStr(v, n, ".function.name")
					case "description":
						fn.Description, e = toolStr(v, n, ".function.description")
					case "parameters":
						fn.Parameters = RawBytes(body, v)
					case "strict":
						if v.Type != gjson.True && v.Type != gjson.False {
							e = typeErr(fmt.Sprintf("tools[%d].function.strict", n), "a boolean")
						} else {
							b := v.Type == gjson.True
							fn.Strict = &b
						}
					}
					return e == nil
				})
				tool.Function = fn
			}
			return e == nil
		})
		c.Tools = append(c.Tools, tool)
		return e == nil
	})
	return e
}
