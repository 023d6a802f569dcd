package responses

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Requests are read in one pass with jsonscan, as the Anthropic surface
// reads its own: translation sits on the path of every request
// (BenchmarkTranslateRequest). Strings and raw values of the canonical
// request point into the body, which must not change afterwards.

// Limits on fields, checked before anything is sent upstream.
const (
	maxItems    = 10_000
	maxModelLen = 256
)

func bad(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

func wrongType(param, want string) *llm.Error {
	return bad(param, "Invalid type for '%s': expected %s.", param, want)
}

func missing(param string) *llm.Error {
	return bad(param, "Missing required parameter: '%s'.", param)
}

// errStateful refuses what needs responses stored on the server: this
// edge keeps none (README, "Responses API").
func errStateful(param string) *llm.Error {
	return bad(param, "Meridian does not store responses, so '%s' is not supported: send the whole conversation in 'input' and leave 'store' unset or false.", param)
}

// Decode translates a Responses API body into a canonical chat request.
// The request keeps the body as Native (FormatResponses), for an
// upstream that speaks the Responses API and for the answer's echo of
// the request. Errors name the field the way OpenAI does, e.g.
// "input[1].content[0].type".
func Decode(body []byte) (*llm.Request, *llm.Error) {
	if at := api.InvalidUTF8(body); at >= 0 {
		return nil, bad("", "We could not parse the JSON body of your request: it is not valid UTF-8 (invalid byte at offset %d).", at)
	}
	s := jsonscan.New(body)
	if s.Peek() != jsonscan.Object {
		s.Skip()
		if s.Err() != nil {
			return nil, bad("", "We could not parse the JSON body of your request: %v.", s.Err())
		}
		return nil, bad("", "The request body must be a JSON object.")
	}
	c := &llm.ChatRequest{}
	var e *llm.Error
	var instructions []byte
	hasInput := false
	s.Object(func(k []byte) bool {
		switch s.Peek() {
		case jsonscan.Null:
			s.Null()
			return true
		case jsonscan.Invalid:
			s.Skip() // records the syntax error
			return false
		}
		switch string(k) {
		case "model":
			if s.Peek() != jsonscan.String {
				e = wrongType("model", "a string")
				return false
			}
			c.Model = s.Str()
		case "input":
			// Read in place; instructions that come later go before it.
			hasInput = true
			e = decodeInput(s, c)
		case "instructions":
			if s.Peek() != jsonscan.String {
				e = wrongType("instructions", "a string")
				return false
			}
			instructions = s.Raw()
		case "stream":
			if s.Peek() != jsonscan.Bool {
				e = wrongType("stream", "a boolean")
				return false
			}
			c.Stream = s.Bool()
		case "max_output_tokens":
			n, ok := int64(0), s.Peek() == jsonscan.Number
			if ok {
				n, ok = s.Int()
			}
			if !ok || n < 1 {
				e = bad("max_output_tokens", "Invalid 'max_output_tokens': expected a positive integer.")
				return false
			}
			m := int(n)
			c.MaxCompletionTokens = &m
		case "temperature", "top_p":
			if s.Peek() != jsonscan.Number {
				e = wrongType(string(k), "a number")
				return false
			}
			x := s.Float()
			if k[0] == 't' && k[1] == 'e' {
				c.Temperature = &x
			} else {
				c.TopP = &x
			}
		case "user", "safety_identifier":
			if s.Peek() != jsonscan.String {
				e = wrongType(string(k), "a string")
				return false
			}
			if u := s.Str(); c.User == "" || k[0] == 's' {
				c.User = u
			}
		case "metadata":
			if s.Peek() != jsonscan.Object {
				e = wrongType("metadata", "an object")
				return false
			}
			s.Object(func(k []byte) bool {
				if s.Peek() != jsonscan.String {
					e = wrongType("metadata."+string(k), "a string")
					return false
				}
				s.Str()
				return true
			})
		case "tools":
			e = decodeTools(s, c)
		case "tool_choice":
			e = decodeToolChoice(s, c)
		case "text":
			e = decodeText(s, c)
		case "store":
			if s.Peek() != jsonscan.Bool {
				e = wrongType("store", "a boolean")
				return false
			}
			if s.Bool() {
				e = errStateful("store")
			}
		case "previous_response_id", "conversation", "prompt":
			e = errStateful(string(k))
		case "background":
			if s.Peek() != jsonscan.Bool {
				e = wrongType("background", "a boolean")
				return false
			}
			if s.Bool() {
				e = errStateful("background")
			}
		default:
			s.Skip() // reasoning, include, truncation, …: an upstream that speaks Responses gets them
		}
		return e == nil
	})
	if err := s.End(); err != nil && e == nil {
		return nil, bad("", "We could not parse the JSON body of your request: %v.", err)
	}
	if e != nil {
		return nil, e
	}
	switch {
	case c.Model == "":
		return nil, missing("model")
	case len(c.Model) > maxModelLen:
		return nil, bad("model", "Invalid 'model': string too long. Expected a string with maximum length %d.", maxModelLen)
	case !hasInput:
		return nil, missing("input")
	}
	if instructions != nil {
		c.Messages = append(c.Messages, llm.Message{})
		copy(c.Messages[1:], c.Messages)
		c.Messages[0] = llm.Message{Role: llm.RoleSystem, Content: instructions}
	}
	return &llm.Request{Op: llm.OpChat, Model: c.Model, Stream: c.Stream, IncludeUsage: true, Chat: c,
		Native: body, NativeFormat: llm.FormatResponses}, nil
}

func itemPath(n int) string { return "input[" + strconv.Itoa(n) + "]" }

// decodeInput reads input: a string, one user turn, or a list of items.
// Messages become canonical messages; function_call items join the
// assistant message before them (or a new one) as tool calls, and
// function_call_output items become tool messages.
func decodeInput(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	switch s.Peek() {
	case jsonscan.String:
		c.Messages = append(c.Messages, llm.Message{Role: llm.RoleUser, Content: s.Raw()})
		return nil
	case jsonscan.Array:
	default:
		return wrongType("input", "a string or an array of input items")
	}
	if c.Messages == nil {
		// Most items are messages: one allocation for a typical
		// conversation rather than a growth per doubling.
		c.Messages = make([]llm.Message, 0, 1+min(len(s.Bytes())/256, 1024))
	}
	var calls map[string]bool
	var e *llm.Error
	s.Array(func(n int) bool {
		if n >= maxItems {
			e = bad("input", "Invalid 'input': array too long. Expected an array with maximum length %d.", maxItems)
			return false
		}
		if s.Peek() != jsonscan.Object {
			e = wrongType(itemPath(n), "an object")
			return false
		}
		var it item
		s.Object(func(k []byte) bool {
			e = it.field(s, n, k)
			return e == nil
		})
		if e != nil {
			return false
		}
		if s.Err() != nil {
			return false
		}
		switch it.typ {
		case "", "message":
			e = it.message(c, n)
		case "function_call":
			if e = it.need(n, "call_id", it.callID); e == nil {
				e = it.need(n, "name", it.name)
			}
			if e != nil {
				return false
			}
			if calls == nil {
				calls = map[string]bool{}
			}
			calls[it.callID] = true
			call := llm.ToolCall{ID: it.callID, Type: "function", Function: llm.FunctionCall{Name: it.name, Arguments: it.arguments}}
			if m := len(c.Messages); m > 0 && c.Messages[m-1].Role == llm.RoleAssistant {
				c.Messages[m-1].ToolCalls = append(c.Messages[m-1].ToolCalls, call)
			} else {
				c.Messages = append(c.Messages, llm.Message{Role: llm.RoleAssistant, Content: nullContent, ToolCalls: []llm.ToolCall{call}})
			}
		case "function_call_output":
			if e = it.need(n, "call_id", it.callID); e != nil {
				return false
			}
			if !calls[it.callID] {
				e = bad(itemPath(n)+".call_id", "No tool call found for function call output with call_id %s.", it.callID)
				return false
			}
			c.Messages = append(c.Messages, llm.Message{Role: llm.RoleTool, ToolCallID: it.callID, Content: llm.AppendJSONString(nil, it.output)})
		case "reasoning":
			// Earlier turns' reasoning: no other format takes it back.
		case "item_reference":
			e = errStateful(itemPath(n) + ".type")
		default:
			e = bad(itemPath(n)+".type", "Invalid value: '%s'. Meridian accepts input items of type 'message', 'function_call', 'function_call_output' and 'reasoning'.", it.typ)
		}
		return e == nil
	})
	if e != nil {
		return e
	}
	if err := s.Err(); err != nil {
		return bad("", "We could not parse the JSON body of your request: %v.", err)
	}
	if len(c.Messages) == 0 {
		return bad("input", "Invalid 'input': expected at least one input item.")
	}
	return nil
}

var nullContent = []byte("null")

// item is one input item, as read.
type item struct {
	typ, role                       string
	content                         []byte // raw
	callID, name, arguments, output string
	hasArguments                    bool
	// ready: content is already the canonical content.
	ready bool
}

func (it *item) field(s *jsonscan.Scanner, n int, k []byte) *llm.Error {
	if s.Peek() == jsonscan.Null {
		s.Null()
		return nil
	}
	str := func(dst *string) *llm.Error {
		if s.Peek() != jsonscan.String {
			return wrongType(itemPath(n)+"."+string(k), "a string")
		}
		*dst = s.Str()
		return nil
	}
	switch string(k) {
	case "type":
		return str(&it.typ)
	case "role":
		return str(&it.role)
	case "content":
		if it.role != "" && (it.typ == "" || it.typ == "message") {
			// The role came first, as it usually does: read the content
			// in place rather than keep it and read it twice.
			content, e := readContent(s, n, it.role == "assistant")
			it.content, it.ready = content, true
			return e
		}
		it.content = s.Raw()
	case "call_id":
		return str(&it.callID)
	case "name":
		return str(&it.name)
	case "arguments":
		it.hasArguments = true
		return str(&it.arguments)
	case "output":
		if s.Peek() == jsonscan.Array {
			// A list of input_text parts: their text, joined.
			text, e := partsText(s, itemPath(n)+".output")
			it.output = text
			return e
		}
		return str(&it.output)
	default:
		s.Skip()
	}
	return nil
}

// need refuses an item whose required field is empty.
func (it *item) need(n int, field, value string) *llm.Error {
	if value == "" {
		return missing(itemPath(n) + "." + field)
	}
	return nil
}

// message turns a message item into a canonical message.
func (it *item) message(c *llm.ChatRequest, n int) *llm.Error {
	role := it.role
	switch role {
	case "user", "system", "developer", "assistant":
	case "":
		return missing(itemPath(n) + ".role")
	default:
		return bad(itemPath(n)+".role", "Invalid value: '%s'. Supported values are: 'user', 'assistant', 'system', and 'developer'.", role)
	}
	if it.content == nil {
		return missing(itemPath(n) + ".content")
	}
	content := it.content
	if !it.ready {
		var e *llm.Error
		if content, e = readContent(jsonscan.New(it.content), n, role == "assistant"); e != nil {
			return e
		}
	}
	c.Messages = append(c.Messages, llm.Message{Role: role, Content: content})
	return nil
}

// readContent reads a message's content into the canonical content: a
// string as it is, a list of parts through parts.
func readContent(s *jsonscan.Scanner, n int, assistant bool) ([]byte, *llm.Error) {
	switch s.Peek() {
	case jsonscan.String:
		return s.Raw(), nil
	case jsonscan.Array:
		return parts(s, n, assistant)
	case jsonscan.Null:
		s.Null()
		return nil, nil
	}
	s.Skip()
	return nil, wrongType(itemPath(n)+".content", "a string or an array of content parts")
}

// parts translates a content list into the canonical content: OpenAI
// chat's parts (text, image_url), or one string for an assistant, whose
// content in chat is text only.
func parts(s *jsonscan.Scanner, n int, assistant bool) ([]byte, *llm.Error) {
	var out []byte
	var text strings.Builder
	var e *llm.Error
	count := 0
	s.Array(func(i int) bool {
		// The part's path, built only for an error.
		p := func() string { return itemPath(n) + ".content[" + strconv.Itoa(i) + "]" }
		if s.Peek() != jsonscan.Object {
			e = wrongType(p(), "an object")
			return false
		}
		var typ, txt, url, detail, fileID string
		s.Object(func(k []byte) bool {
			if s.Peek() != jsonscan.String {
				s.Skip()
				return true
			}
			switch string(k) {
			case "type":
				typ = s.Str()
			case "text", "refusal":
				txt = s.Str()
			case "image_url":
				url = s.Str()
			case "detail":
				detail = s.Str()
			case "file_id":
				fileID = s.Str()
			default:
				s.Skip()
			}
			return true
		})
		switch typ {
		case "input_text", "output_text", "refusal":
			if assistant {
				text.WriteString(txt)
				return true
			}
			out = appendSep(out, count)
			out = append(out, `{"type":"text","text":`...)
			out = llm.AppendJSONString(out, txt)
			out = append(out, '}')
		case "input_image":
			if assistant {
				e = bad(p()+".type", "Invalid value: 'input_image'. An assistant message holds text only.")
				return false
			}
			if url == "" {
				if fileID != "" {
					e = bad(p()+".file_id", "Meridian does not store files: send the image as 'image_url', a URL or a data: URL.")
				} else {
					e = missing(p() + ".image_url")
				}
				return false
			}
			out = appendSep(out, count)
			out = append(out, `{"type":"image_url","image_url":{"url":`...)
			out = llm.AppendJSONString(out, url)
			if detail != "" {
				out = append(out, `,"detail":`...)
				out = llm.AppendJSONString(out, detail)
			}
			out = append(out, `}}`...)
		case "":
			e = missing(p() + ".type")
			return false
		default:
			e = bad(p()+".type", "Invalid value: '%s'. Meridian accepts content parts of type 'input_text', 'output_text', 'refusal' and 'input_image'.", typ)
			return false
		}
		count++
		return true
	})
	if e != nil {
		return nil, e
	}
	if s.Err() != nil {
		return nil, bad("", "We could not parse the JSON body of your request: %v.", s.Err())
	}
	if assistant {
		return llm.AppendJSONString(nil, text.String()), nil
	}
	return append(append([]byte{'['}, out...), ']'), nil
}

func appendSep(b []byte, count int) []byte {
	if count > 0 {
		return append(b, ',')
	}
	return b
}

// partsText joins the text of a list of input_text parts.
func partsText(s *jsonscan.Scanner, path string) (string, *llm.Error) {
	var b strings.Builder
	var e *llm.Error
	s.Array(func(i int) bool {
		txt, typ := "", ""
		if s.Peek() != jsonscan.Object {
			e = wrongType(path+"["+strconv.Itoa(i)+"]", "an object")
			return false
		}
		s.Object(func(k []byte) bool {
			if s.Peek() == jsonscan.String && (string(k) == "type" || string(k) == "text") {
				if k[1] == 'y' {
					typ = s.Str()
				} else {
					txt = s.Str()
				}
				return true
			}
			s.Skip()
			return true
		})
		if typ != "input_text" && typ != "output_text" {
			e = bad(path+"["+strconv.Itoa(i)+"].type", "Invalid value: '%s'. A function call's output translates only as text parts.", typ)
			return false
		}
		b.WriteString(txt)
		return true
	})
	return b.String(), e
}

// decodeTools reads function tools, which Responses writes flat
// ({"type":"function","name":…}); hosted tools (web_search, file_search,
// …) are OpenAI's own and translate to no other target.
func decodeTools(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Array {
		return wrongType("tools", "an array")
	}
	var e *llm.Error
	s.Array(func(n int) bool {
		p := "tools[" + strconv.Itoa(n) + "]"
		if s.Peek() != jsonscan.Object {
			e = wrongType(p, "an object")
			return false
		}
		typ := ""
		fn := &llm.FunctionDef{}
		s.Object(func(k []byte) bool {
			if s.Peek() == jsonscan.Null {
				s.Null()
				return true
			}
			str := func(dst *string) bool {
				if s.Peek() != jsonscan.String {
					e = wrongType(p+"."+string(k), "a string")
					return false
				}
				*dst = s.Str()
				return true
			}
			switch string(k) {
			case "type":
				return str(&typ)
			case "name":
				return str(&fn.Name)
			case "description":
				return str(&fn.Description)
			case "parameters":
				fn.Parameters = s.Raw()
			case "strict":
				if s.Peek() != jsonscan.Bool {
					e = wrongType(p+".strict", "a boolean")
					return false
				}
				b := s.Bool()
				fn.Strict = &b
			default:
				s.Skip()
			}
			return true
		})
		if e != nil {
			return false
		}
		switch {
		case typ != "function":
			e = bad(p+".type", "Invalid value: '%s'. Meridian serves tools of type 'function' only: hosted tools run inside OpenAI and translate to no other model.", typ)
		case fn.Name == "":
			e = missing(p + ".name")
		}
		if e != nil {
			return false
		}
		c.Tools = append(c.Tools, llm.Tool{Type: "function", Function: fn})
		return true
	})
	return e
}

// decodeToolChoice reads tool_choice: "auto", "none", "required", or
// {"type":"function","name":…}, which chat writes with the name nested.
func decodeToolChoice(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	switch s.Peek() {
	case jsonscan.String:
		raw := s.Raw()
		switch string(raw) {
		case `"auto"`, `"none"`, `"required"`:
			c.ToolChoice = raw
			return nil
		}
		return bad("tool_choice", "Invalid value: %s. Supported values are: 'none', 'auto', and 'required'.", raw)
	case jsonscan.Object:
	default:
		return wrongType("tool_choice", "a string or an object")
	}
	typ, name := "", ""
	s.Object(func(k []byte) bool {
		if s.Peek() == jsonscan.String {
			switch string(k) {
			case "type":
				typ = s.Str()
				return true
			case "name":
				name = s.Str()
				return true
			}
		}
		s.Skip()
		return true
	})
	if typ != "function" {
		return bad("tool_choice.type", "Invalid value: '%s'. Meridian accepts a tool_choice of type 'function' only.", typ)
	}
	if name == "" {
		return missing("tool_choice.name")
	}
	c.SetToolChoice(llm.ToolChoiceFunction, name)
	return nil
}

// decodeText reads text.format into chat's response_format: json_schema
// moves its name, schema, strict and description under "json_schema".
func decodeText(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Object {
		return wrongType("text", "an object")
	}
	var e *llm.Error
	s.Object(func(k []byte) bool {
		if string(k) != "format" || s.Peek() == jsonscan.Null {
			s.Skip() // verbosity
			return true
		}
		if s.Peek() != jsonscan.Object {
			e = wrongType("text.format", "an object")
			return false
		}
		var typ, name string
		var schema, strict, desc []byte
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "type", "name":
				if s.Peek() != jsonscan.String {
					e = wrongType("text.format."+string(k), "a string")
					return false
				}
				if k[0] == 't' {
					typ = s.Str()
				} else {
					name = s.Str()
				}
			case "schema":
				schema = s.Raw()
			case "strict":
				strict = s.Raw()
			case "description":
				desc = s.Raw()
			default:
				s.Skip()
			}
			return true
		})
		if e != nil {
			return false
		}
		switch typ {
		case "text":
			c.ResponseFormat = nil
		case "json_object":
			c.ResponseFormat = []byte(`{"type":"json_object"}`)
		case "json_schema":
			if name == "" {
				e = missing("text.format.name")
				return false
			}
			if schema == nil {
				e = missing("text.format.schema")
				return false
			}
			b := append(make([]byte, 0, 64+len(schema)), `{"type":"json_schema","json_schema":{"name":`...)
			b = llm.AppendJSONString(b, name)
			b = append(b, `,"schema":`...)
			b = append(b, schema...)
			if strict != nil {
				b = append(append(b, `,"strict":`...), strict...)
			}
			if desc != nil {
				b = append(append(b, `,"description":`...), desc...)
			}
			c.ResponseFormat = append(b, `}}`...)
		default:
			e = bad("text.format.type", "Invalid value: '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", typ)
		}
		return e == nil
	})
	return e
}

// echo is what a response object repeats of its request, read from the
// request's body again when the answer is written.
type echo struct {
	instructions, tools, toolChoice, text, metadata, parallel, temperature, topP, maxOutput, user []byte
}

func readEcho(body []byte) echo {
	var ec echo
	if body == nil {
		return ec
	}
	s := jsonscan.New(body)
	if s.Peek() != jsonscan.Object {
		return ec
	}
	s.Object(func(k []byte) bool {
		var dst *[]byte
		switch string(k) {
		case "instructions":
			dst = &ec.instructions
		case "tools":
			dst = &ec.tools
		case "tool_choice":
			dst = &ec.toolChoice
		case "text":
			dst = &ec.text
		case "metadata":
			dst = &ec.metadata
		case "parallel_tool_calls":
			dst = &ec.parallel
		case "temperature":
			dst = &ec.temperature
		case "top_p":
			dst = &ec.topP
		case "max_output_tokens":
			dst = &ec.maxOutput
		case "user":
			dst = &ec.user
		default:
			s.Skip()
			return true
		}
		*dst = s.Raw()
		return true
	})
	return ec
}
