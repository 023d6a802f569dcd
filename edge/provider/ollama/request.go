package ollama

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Translation of the canonical chat request to Ollama's /api/chat body.
// The body is appended by hand rather than marshalled: JSON the client
// sent (string contents, tool schemas, a response schema) is copied as
// it is, which keeps a 4 KB request to a handful of allocations and a
// few µs.
//
// What translates and what does not:
//   - roles through llm.RoleTo (developer becomes system); a message's
//     name is dropped, Ollama has no field for it;
//   - text parts are joined with newlines into Ollama's one content
//     string; images must be base64 data: URLs, because Ollama cannot
//     fetch a URL; other part types are refused;
//   - tool results carry tool_name (the function name of the call they
//     answer, which is how Ollama matches them) and tool_call_id, and
//     assistant tool calls carry their id: servers since 0.12.10 give
//     calls IDs, older ones ignore the unknown fields;
//   - tool_choice: Ollama has none. "none" sends no tools, a named
//     function sends only that tool, "required" cannot be enforced and
//     sends all of them;
//   - response_format json_object becomes format "json", json_schema its
//     schema object;
//   - temperature, top_p, top_k, seed, max(_completion)_tokens and stop
//     go in options; n > 1 is refused; logprobs, top_logprobs and user
//     are dropped; the penalties are not in the canonical typed request
//     and so are not sent either.

// encodeChat appends c as an Ollama chat request body to dst.
func encodeChat(dst []byte, c *llm.ChatRequest, model string, stream bool) ([]byte, error) {
	return encodeChatFor(dst, c, model, stream, Engine{})
}

// encodeChatFor is encodeChat with an engine's own settings added.
func encodeChatFor(dst []byte, c *llm.ChatRequest, model string, stream bool, e Engine) ([]byte, error) {
	if c.N != nil && *c.N > 1 {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "n", "This provider returns one choice per request; 'n' must be 1.")
	}
	dst = append(dst, `{"model":`...)
	dst = llm.AppendJSONString(dst, model)
	if stream {
		dst = append(dst, `,"stream":true`...)
	} else {
		dst = append(dst, `,"stream":false`...)
	}
	dst = append(dst, `,"messages":[`...)
	var calls []toolCallName
	var err error
	for i := range c.Messages {
		m := &c.Messages[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		role := llm.RoleTo(llm.FormatOllama, m.Role)
		if role == "" {
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].role", i), "Invalid role '%s'.", m.Role)
		}
		dst = append(dst, `{"role":`...)
		dst = llm.AppendJSONString(dst, role)
		if dst, err = appendContent(dst, m, i); err != nil {
			return nil, err
		}
		if len(m.ToolCalls) > 0 {
			dst = append(dst, `,"tool_calls":[`...)
			for j := range m.ToolCalls {
				tc := &m.ToolCalls[j]
				if j > 0 {
					dst = append(dst, ',')
				}
				args := strings.TrimSpace(tc.Function.Arguments)
				if args == "" {
					args = "{}"
				}
				// Ollama takes arguments as an object, not as JSON text.
				if args[0] != '{' || !validJSON(args) {
					return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].tool_calls[%d].function.arguments", i, j),
						"Tool call arguments must be a JSON object.")
				}
				dst = append(dst, '{')
				if tc.ID != "" {
					dst = append(dst, `"id":`...)
					dst = llm.AppendJSONString(dst, tc.ID)
					dst = append(dst, ',')
				}
				dst = append(dst, `"function":{"name":`...)
				dst = llm.AppendJSONString(dst, tc.Function.Name)
				dst = append(dst, `,"arguments":`...)
				dst = append(dst, args...)
				dst = append(dst, "}}"...)
				calls = append(calls, toolCallName{tc.ID, tc.Function.Name})
			}
			dst = append(dst, ']')
		}
		if m.Role == llm.RoleTool {
			if name := lookupCall(calls, m.ToolCallID); name != "" {
				dst = append(dst, `,"tool_name":`...)
				dst = llm.AppendJSONString(dst, name)
			}
			if m.ToolCallID != "" {
				dst = append(dst, `,"tool_call_id":`...)
				dst = llm.AppendJSONString(dst, m.ToolCallID)
			}
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if dst, err = appendTools(dst, c); err != nil {
		return nil, err
	}
	if dst, err = appendFormat(dst, c.ResponseFormat); err != nil {
		return nil, err
	}
	dst = appendOptions(dst, c, e.NumThread)
	dst = e.appendKeepAlive(dst)
	return append(dst, '}'), nil
}

// toolCallName pairs a tool call's ID with its function's name, so a
// tool result can name the function Ollama matches it by.
type toolCallName struct{ id, name string }

func lookupCall(calls []toolCallName, id string) string {
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].id == id {
			return calls[i].name
		}
	}
	return ""
}

// appendContent appends ,"content":... and, when the message has
// images, ,"images":[...].
func appendContent(dst []byte, m *llm.Message, i int) ([]byte, error) {
	dst = append(dst, `,"content":`...)
	raw := bytes.TrimSpace(m.Content)
	if len(raw) == 0 || string(raw) == "null" {
		return append(dst, `""`...), nil
	}
	switch raw[0] {
	case '"':
		// Already a JSON string: copy it as it is.
		return append(dst, raw...), nil
	case '[':
	default:
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].content", i), "%s.", capitalize(llm.ErrContent.Error()))
	}
	parts, err := m.Parts()
	if err != nil {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].content", i), "Invalid content parts.")
	}
	dst = append(dst, '"')
	texts := 0
	for j := range parts {
		p := &parts[j]
		switch p.Type {
		case "text":
			if p.Text == "" {
				continue
			}
			if texts > 0 {
				dst = append(dst, `\n`...)
			}
			dst = appendEscaped(dst, p.Text)
			texts++
		case "image_url":
			// Checked here, written after the content string.
			if _, err := imageData(p, i, j); err != nil {
				return nil, err
			}
		default:
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].content[%d].type", i, j),
				"Content part type '%s' is not supported by this provider; use text or image_url.", p.Type)
		}
	}
	dst = append(dst, '"')
	images := 0
	for j := range parts {
		if parts[j].Type != "image_url" {
			continue
		}
		data, _ := imageData(&parts[j], i, j)
		if images == 0 {
			dst = append(dst, `,"images":[`...)
		} else {
			dst = append(dst, ',')
		}
		dst = llm.AppendJSONString(dst, data)
		images++
	}
	if images > 0 {
		dst = append(dst, ']')
	}
	return dst, nil
}

// imageData returns the base64 payload of an image part's data: URL.
func imageData(p *llm.ContentPart, i, j int) (string, error) {
	refuse := func(msg string) error {
		return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].content[%d].image_url.url", i, j), "%s", msg)
	}
	if p.ImageURL == nil {
		return "", refuse("An image_url part needs an image_url.url.")
	}
	u := p.ImageURL.URL
	if !strings.HasPrefix(u, "data:") {
		return "", refuse("This provider cannot fetch image URLs; send the image inline as a base64 data: URL.")
	}
	comma := strings.IndexByte(u, ',')
	if comma < 0 || !strings.HasSuffix(u[:comma], ";base64") {
		return "", refuse("An image data: URL must be base64-encoded.")
	}
	return u[comma+1:], nil
}

// appendEscaped appends s JSON-escaped, without quotes.
func appendEscaped(dst []byte, s string) []byte {
	start := len(dst)
	dst = llm.AppendJSONString(dst, s)
	n := copy(dst[start:], dst[start+1:len(dst)-1])
	return dst[:start+n]
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// appendTools appends ,"tools":[...] as tool_choice allows.
func appendTools(dst []byte, c *llm.ChatRequest) ([]byte, error) {
	if len(c.Tools) == 0 {
		return dst, nil
	}
	mode, only := c.ToolChoiceMode()
	if mode == llm.ToolChoiceNone {
		return dst, nil
	}
	n := 0
	for j := range c.Tools {
		t := &c.Tools[j]
		if t.Type != "function" || t.Function == nil {
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("tools[%d].type", j),
				"Tool type '%s' is not supported by this provider; use function tools.", t.Type)
		}
		if mode == llm.ToolChoiceFunction && t.Function.Name != only {
			continue
		}
		if n == 0 {
			dst = append(dst, `,"tools":[`...)
		} else {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, `{"type":"function","function":{"name":`...)
		dst = llm.AppendJSONString(dst, t.Function.Name)
		if t.Function.Description != "" {
			dst = append(dst, `,"description":`...)
			dst = llm.AppendJSONString(dst, t.Function.Description)
		}
		if p := bytes.TrimSpace(t.Function.Parameters); len(p) > 0 && string(p) != "null" {
			dst = append(dst, `,"parameters":`...)
			dst = append(dst, p...)
		}
		dst = append(dst, "}}"...)
	}
	if n == 0 {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "tool_choice", "tool_choice names function '%s', which is not in tools.", only)
	}
	return append(dst, ']'), nil
}

// appendFormat appends ,"format":... for a response_format.
func appendFormat(dst []byte, rf []byte) ([]byte, error) {
	rf = bytes.TrimSpace(rf)
	if len(rf) == 0 || string(rf) == "null" {
		return dst, nil
	}
	// One pass over response_format, its type and json_schema.schema; a
	// repeated key takes its last value.
	var typ, schema []byte // JSON texts
	s := jsonscan.New(rf)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "type":
				typ = s.Raw()
			case "json_schema":
				schema = nil
				if s.Peek() != jsonscan.Object {
					s.Skip()
					return true
				}
				s.Object(func(k []byte) bool {
					if string(k) == "schema" {
						schema = nil
						if s.Peek() == jsonscan.Object {
							schema = s.Raw()
						} else {
							s.Skip()
						}
					}
					return true
				})
			}
			return true
		})
	}
	var name string // the type, when it is a string
	if len(typ) > 0 && typ[0] == '"' {
		name = valueText(typ)
	}
	switch name {
	case "text":
		return dst, nil
	case "json_object":
		return append(dst, `,"format":"json"`...), nil
	case "json_schema":
		if schema != nil {
			dst = append(dst, `,"format":`...)
			return append(dst, schema...), nil
		}
		// A json_schema without a schema asks for JSON of any shape.
		return append(dst, `,"format":"json"`...), nil
	default:
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "response_format.type", "Invalid response_format type '%s'.", valueText(typ))
	}
}

// valueText is a JSON value as text, as error messages have always
// shown it (gjson's Result.String): a string's value, null's "", a
// number with a fraction or exponent in plain decimal, any other value
// its JSON.
func valueText(raw []byte) string {
	s := jsonscan.New(raw)
	switch s.Peek() {
	case jsonscan.String:
		return s.Str()
	case jsonscan.Null, jsonscan.Invalid:
		return ""
	case jsonscan.Number:
		if strings.Trim(string(raw), "-0123456789") != "" {
			return strconv.FormatFloat(s.Float(), 'f', -1, 64)
		}
	}
	return string(raw)
}

// validJSON reports whether text is one JSON value.
func validJSON(text string) bool {
	s := jsonscan.New(unsafe.Slice(unsafe.StringData(text), len(text)))
	s.Skip()
	return s.End() == nil
}

// appendOptions appends ,"options":{...} when any sampling option, or
// the engine's thread count, is set.
func appendOptions(dst []byte, c *llm.ChatRequest, numThread int) []byte {
	n := 0
	key := func(name string) {
		if n == 0 {
			dst = append(dst, `,"options":{`...)
		} else {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `":`...)
	}
	if c.Temperature != nil {
		key("temperature")
		dst = strconv.AppendFloat(dst, *c.Temperature, 'g', -1, 64)
	}
	if c.TopP != nil {
		key("top_p")
		dst = strconv.AppendFloat(dst, *c.TopP, 'g', -1, 64)
	}
	if c.TopK != nil {
		key("top_k")
		dst = strconv.AppendInt(dst, int64(*c.TopK), 10)
	}
	if c.Seed != nil {
		key("seed")
		dst = strconv.AppendInt(dst, *c.Seed, 10)
	}
	if c.MaxCompletionTokens != nil {
		key("num_predict")
		dst = strconv.AppendInt(dst, int64(*c.MaxCompletionTokens), 10)
	} else if c.MaxTokens != nil {
		key("num_predict")
		dst = strconv.AppendInt(dst, int64(*c.MaxTokens), 10)
	}
	if numThread > 0 {
		key("num_thread")
		dst = strconv.AppendInt(dst, int64(numThread), 10)
	}
	if stop := c.StopList(); len(stop) > 0 {
		key("stop")
		dst = append(dst, '[')
		for i, s := range stop {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = llm.AppendJSONString(dst, s)
		}
		dst = append(dst, ']')
	}
	if n > 0 {
		dst = append(dst, '}')
	}
	return dst
}

// encodeEmbedFor translates an OpenAI embeddings request body to Ollama's
// /api/embed body. Text input passes through; token-array input has no
// Ollama equivalent and is refused. dimensions passes through (newer
// servers truncate to it; older ones ignore it). b64 reports
// encoding_format "base64", which the official SDKs ask for by default.
// e's settings are added.
func encodeEmbedFor(body []byte, model string, e Engine) (out []byte, b64 bool, err error) {
	// One pass over the body for input, encoding_format and dimensions
	// (JSON texts); a repeated key takes its last value.
	var in, format, dims []byte
	var text bool // input is a string or an array of strings
	s := jsonscan.New(body)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "input":
				start := s.Offset()
				text = readTextInput(s)
				in = bytes.TrimRight(body[start:s.Offset()], " \t\r\n")
			case "encoding_format":
				format = s.Raw()
			case "dimensions":
				dims = s.Raw()
			}
			return true
		})
	} else {
		s.Skip()
	}
	if s.End() != nil {
		return nil, false, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is not valid JSON.")
	}
	if !text {
		return nil, false, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "input", "'input' must be a string or an array of strings for this provider.")
	}
	var f string // encoding_format, when it is a string
	if len(format) > 0 && format[0] == '"' {
		f = valueText(format)
	}
	switch f {
	case "base64":
		b64 = true
	case "float", "":
		if len(format) > 0 && format[0] != '"' && string(format) != "null" {
			return nil, false, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "encoding_format", "Invalid encoding_format.")
		}
	default:
		return nil, false, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "encoding_format", "Invalid encoding_format '%s'; use float or base64.", f)
	}
	out = make([]byte, 0, len(in)+len(model)+64)
	out = append(out, `{"model":`...)
	out = llm.AppendJSONString(out, model)
	out = append(out, `,"input":`...)
	out = append(out, in...)
	if len(dims) > 0 && string(dims) != "null" {
		n, whole := wholeNumber(dims)
		if !whole || n <= 0 {
			return nil, false, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "dimensions", "'dimensions' must be a positive integer.")
		}
		out = append(out, `,"dimensions":`...)
		out = strconv.AppendInt(out, n, 10)
	}
	out = e.appendKeepAlive(out)
	return append(out, '}'), b64, nil
}

// readTextInput reads an embeddings input and reports whether it is a
// string or an array of strings.
func readTextInput(s *jsonscan.Scanner) bool {
	switch s.Peek() {
	case jsonscan.String:
		s.Skip()
		return true
	case jsonscan.Array:
		ok := true
		s.Array(func(int) bool {
			ok = ok && s.Peek() == jsonscan.String
			s.Skip()
			return true
		})
		return ok
	}
	s.Skip()
	return false
}

// wholeNumber reads a JSON number's text as an integer; whole is false
// when it is not a number or has a fraction (2.0 and 2e3 are whole).
func wholeNumber(raw []byte) (n int64, whole bool) {
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	t := view(raw)
	f, _ := strconv.ParseFloat(t, 64)
	n = jsonscan.LooseIntText(t)
	return n, float64(n) == f
}
