package anthropic

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// defaultMaxTokens is sent when the client set no limit: Anthropic
// requires max_tokens, OpenAI does not.
const defaultMaxTokens = 4096

// defaultSchema is a tool's input_schema when the client gave no
// parameters: Anthropic requires an object schema, OpenAI does not.
const defaultSchema = `{"type":"object"}`

// encoder builds a Messages request body by appending to one buffer.
// encoding/json over intermediate structs would cost several times the
// 20 µs a 4 KB request may take.
//
// Anthropic requires user and assistant turns to alternate, so blocks of
// consecutive messages with the same Anthropic role go into one message:
// a message is opened lazily by the first block written for it and
// stays open while the role does not change.
type encoder struct {
	b     []byte
	role  string // role of the open message; "" when none is open
	count int    // messages written
	parts []part // scratch for one message's content parts
	sys   []string
}

// part is one content part, its strings viewing the request's bytes.
type part struct {
	typ string // "text" or "image_url"
	// text is the text as a JSON string literal, quotes included, as the
	// request holds it: copying it is cheaper than decoding and
	// re-encoding it.
	text string
	url  string
}

// empty reports a text part with no text; Anthropic refuses empty text
// blocks.
func (p *part) empty() bool { return p.typ == "text" && len(p.text) <= 2 }

// appendText appends a JSON string literal taken from the request. The
// typed request's raw JSON passed encoding/json's validation, which
// lets invalid UTF-8 through: such text is decoded and re-encoded with
// replacement characters instead.
func appendText(dst []byte, lit string) []byte {
	if utf8.ValidString(lit) {
		return append(dst, lit...)
	}
	return llm.AppendJSONString(dst, jsonscan.New(bytesOf(lit)).Str())
}

// invalid is the error for a request field Anthropic cannot take.
func invalid(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

// encodeRequest translates c into a Messages request body for model.
//
// What has no Anthropic counterpart is dropped, not refused, so a route
// that falls back from an OpenAI model to a Claude model keeps working:
// seed, logprobs, top_logprobs, response_format, parallel tool calls,
// message names and tools' strict flag. n > 1 is refused, because
// dropping it would silently return fewer answers than asked for.
func encodeRequest(c *llm.ChatRequest, model string, stream bool) ([]byte, error) {
	if c.N != nil && *c.N > 1 {
		return nil, invalid("n", "n > 1 is not supported by this provider; send %d requests instead", *c.N)
	}
	e := encoder{b: make([]byte, 0, sizeHint(c))}
	e.b = append(e.b, `{"model":`...)
	e.b = llm.AppendJSONString(e.b, model)
	e.b = append(e.b, `,"max_tokens":`...)
	e.b = strconv.AppendInt(e.b, int64(maxTokens(c)), 10)
	if err := e.system(c.Messages); err != nil {
		return nil, err
	}
	e.b = append(e.b, `,"messages":[`...)
	for i := range c.Messages {
		if err := e.message(i, &c.Messages[i]); err != nil {
			return nil, err
		}
	}
	if e.count == 0 {
		return nil, invalid("messages", "at least one user or assistant message with content is required")
	}
	e.b = append(e.b, "]}]"...)
	if err := e.tools(c); err != nil {
		return nil, err
	}
	for _, f := range [...]struct {
		name string
		v    *float64
	}{{"temperature", c.Temperature}, {"top_p", c.TopP}} {
		if f.v == nil {
			continue
		}
		if math.IsNaN(*f.v) || math.IsInf(*f.v, 0) {
			return nil, invalid(f.name, "%s must be a finite number", f.name)
		}
		e.b = append(e.b, ',', '"')
		e.b = append(e.b, f.name...)
		e.b = append(e.b, '"', ':')
		e.b = strconv.AppendFloat(e.b, *f.v, 'g', -1, 64)
	}
	if c.TopK != nil {
		e.b = append(e.b, `,"top_k":`...)
		e.b = strconv.AppendInt(e.b, int64(*c.TopK), 10)
	}
	e.stop(c.Stop)
	if c.User != "" {
		e.b = append(e.b, `,"metadata":{"user_id":`...)
		e.b = llm.AppendJSONString(e.b, c.User)
		e.b = append(e.b, '}')
	}
	if stream {
		e.b = append(e.b, `,"stream":true`...)
	}
	return append(e.b, '}'), nil
}

// stop writes stop_sequences from stop, a string or an array of them.
// It reads stop as ChatRequest.StopList does, with jsonscan instead of
// encoding/json: an array decoded by StopList costs a fifth of the whole
// translation. Values other than strings, and empty sequences, are
// dropped; Anthropic refuses empty ones.
func (e *encoder) stop(raw json.RawMessage) {
	if len(raw) == 0 {
		return
	}
	n := 0
	s := jsonscan.New(raw)
	add := func() {
		if s.Peek() != jsonscan.String {
			s.Skip()
			return
		}
		lit := s.Raw()
		if len(lit) <= 2 {
			return
		}
		if n == 0 {
			e.b = append(e.b, `,"stop_sequences":[`...)
		} else {
			e.b = append(e.b, ',')
		}
		e.b = appendText(e.b, view(lit))
		n++
	}
	if s.Peek() == jsonscan.Array {
		s.Array(func(int) bool { add(); return true })
	} else {
		add()
	}
	if n > 0 {
		e.b = append(e.b, ']')
	}
}

func maxTokens(c *llm.ChatRequest) int {
	switch {
	case c.MaxCompletionTokens != nil:
		return *c.MaxCompletionTokens
	case c.MaxTokens != nil:
		return *c.MaxTokens
	}
	return defaultMaxTokens
}

// sizeHint guesses the encoded size, so the buffer grows at most once.
func sizeHint(c *llm.ChatRequest) int {
	n := 256
	for i := range c.Messages {
		m := &c.Messages[i]
		n += len(m.Content) + 64
		for j := range m.ToolCalls {
			tc := &m.ToolCalls[j]
			n += len(tc.ID) + len(tc.Function.Name) + len(tc.Function.Arguments) + 64
		}
	}
	for _, t := range c.Tools {
		if t.Function != nil {
			n += len(t.Function.Name) + len(t.Function.Description) + len(t.Function.Parameters) + 64
		}
	}
	return n + n/8
}

// system writes the top-level system prompt from every system and
// developer message, wherever it stands: Anthropic has no system turns.
// One text goes as a string, several as text blocks.
func (e *encoder) system(msgs []llm.Message) error {
	e.sys = e.sys[:0]
	for i := range msgs {
		m := &msgs[i]
		if m.Role != llm.RoleSystem && m.Role != llm.RoleDeveloper {
			continue
		}
		parts, _, err := e.readParts(i, m.Content)
		if err != nil {
			return err
		}
		for j, p := range parts {
			if p.typ != "text" {
				return invalid("messages["+strconv.Itoa(i)+"].content["+strconv.Itoa(j)+"].type",
					"%s messages may hold only text for this provider", m.Role)
			}
			if !p.empty() {
				e.sys = append(e.sys, p.text)
			}
		}
	}
	switch len(e.sys) {
	case 0:
		return nil
	case 1:
		e.b = append(e.b, `,"system":`...)
		e.b = appendText(e.b, e.sys[0])
		return nil
	}
	e.b = append(e.b, `,"system":[`...)
	for i, s := range e.sys {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, `{"type":"text","text":`...)
		e.b = appendText(e.b, s)
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, ']')
	return nil
}

// message writes message i's blocks.
func (e *encoder) message(i int, m *llm.Message) error {
	switch m.Role {
	case llm.RoleSystem, llm.RoleDeveloper:
		return nil // in the system prompt
	case llm.RoleTool:
		return e.toolResult(i, m)
	}
	role := llm.RoleTo(llm.FormatAnthropic, m.Role)
	if role == "" {
		return invalid("messages["+strconv.Itoa(i)+"].role", "unknown message role %q", m.Role)
	}
	parts, _, err := e.readParts(i, m.Content)
	if err != nil {
		return err
	}
	for j := range parts {
		if parts[j].empty() {
			continue
		}
		e.open(role)
		if err := e.block(i, j, &parts[j]); err != nil {
			return err
		}
	}
	for j := range m.ToolCalls {
		if m.Role != llm.RoleAssistant {
			return invalid("messages["+strconv.Itoa(i)+"].tool_calls", "only assistant messages may hold tool calls")
		}
		if err := e.toolUse(i, j, &m.ToolCalls[j]); err != nil {
			return err
		}
	}
	return nil
}

// open starts a block in a message of role, opening a new message only
// when the open one has another role.
func (e *encoder) open(role string) {
	if e.role == role {
		e.b = append(e.b, ',')
		return
	}
	if e.role != "" {
		e.b = append(e.b, "]},"...)
	}
	e.b = append(e.b, `{"role":"`...)
	e.b = append(e.b, role...)
	e.b = append(e.b, `","content":[`...)
	e.role = role
	e.count++
}

// block writes one text or image block.
func (e *encoder) block(i, j int, p *part) error {
	if p.typ == "text" {
		e.b = append(e.b, `{"type":"text","text":`...)
		e.b = appendText(e.b, p.text)
		e.b = append(e.b, '}')
		return nil
	}
	u := p.url
	switch {
	case strings.HasPrefix(u, "data:"):
		meta, data, ok := strings.Cut(u[len("data:"):], ",")
		media, _, _ := strings.Cut(meta, ";")
		if !ok || !strings.HasSuffix(meta, ";base64") || media == "" || data == "" {
			return invalid(partParam(i, j)+".image_url.url", "image data URLs must be base64: data:<media type>;base64,<data>")
		}
		e.b = append(e.b, `{"type":"image","source":{"type":"base64","media_type":`...)
		e.b = llm.AppendJSONString(e.b, media)
		e.b = append(e.b, `,"data":`...)
		e.b = llm.AppendJSONString(e.b, data)
		e.b = append(e.b, `}}`...)
	case strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://"):
		e.b = append(e.b, `{"type":"image","source":{"type":"url","url":`...)
		e.b = llm.AppendJSONString(e.b, u)
		e.b = append(e.b, `}}`...)
	default:
		return invalid(partParam(i, j)+".image_url.url", "image URLs must be http(s) or base64 data URLs")
	}
	return nil
}

func partParam(i, j int) string {
	return "messages[" + strconv.Itoa(i) + "].content[" + strconv.Itoa(j) + "]"
}

// toolUse writes an assistant tool call as a tool_use block. Anthropic
// wants the input as a JSON object, where OpenAI carries a JSON text.
func (e *encoder) toolUse(i, j int, tc *llm.ToolCall) error {
	param := "messages[" + strconv.Itoa(i) + "].tool_calls[" + strconv.Itoa(j) + "]"
	if tc.Type != "" && tc.Type != "function" {
		return invalid(param+".type", "tool call type %q is not supported by this provider", tc.Type)
	}
	if tc.ID == "" {
		return invalid(param+".id", "tool calls need an id")
	}
	if tc.Function.Name == "" {
		return invalid(param+".function.name", "tool calls need a function name")
	}
	args := strings.TrimSpace(tc.Function.Arguments)
	if args == "" {
		args = "{}" // some clients send no arguments for a call without parameters
	}
	if args[0] != '{' || !validJSON(args) {
		return invalid(param+".function.arguments", "function arguments must be a JSON object")
	}
	e.open("assistant")
	e.b = append(e.b, `{"type":"tool_use","id":`...)
	e.b = appendToolID(e.b, tc.ID)
	e.b = append(e.b, `,"name":`...)
	e.b = llm.AppendJSONString(e.b, tc.Function.Name)
	e.b = append(e.b, `,"input":`...)
	e.b = append(e.b, args...)
	e.b = append(e.b, '}')
	return nil
}

// toolResult writes a tool message as a tool_result block of a user
// message; consecutive results, and a user message after them, share
// that message. Content given as a string stays a string; parts become
// text and image blocks.
func (e *encoder) toolResult(i int, m *llm.Message) error {
	if m.ToolCallID == "" {
		return invalid("messages["+strconv.Itoa(i)+"].tool_call_id", "tool messages need a tool_call_id")
	}
	parts, plain, err := e.readParts(i, m.Content)
	if err != nil {
		return err
	}
	e.open(llm.RoleTo(llm.FormatAnthropic, llm.RoleTool))
	e.b = append(e.b, `{"type":"tool_result","tool_use_id":`...)
	e.b = appendToolID(e.b, m.ToolCallID)
	switch {
	case plain:
		if !parts[0].empty() {
			e.b = append(e.b, `,"content":`...)
			e.b = appendText(e.b, parts[0].text)
		}
	default:
		n := 0
		for j := range parts {
			if parts[j].empty() {
				continue
			}
			if n == 0 {
				e.b = append(e.b, `,"content":[`...)
			} else {
				e.b = append(e.b, ',')
			}
			if err := e.block(i, j, &parts[j]); err != nil {
				return err
			}
			n++
		}
		if n > 0 {
			e.b = append(e.b, ']')
		}
	}
	e.b = append(e.b, '}')
	return nil
}

// appendToolID writes a tool call ID as Anthropic accepts it,
// [a-zA-Z0-9_-]+: IDs minted by other providers (say "functions.f:0")
// have other bytes, which become '_'. The same ID maps the same way in
// tool_use and tool_result, so pairs still match.
func appendToolID(dst []byte, id string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			dst = append(dst, c)
		} else {
			dst = append(dst, '_')
		}
	}
	return append(dst, '"')
}

// tools writes tools and tool_choice. tool_choice goes only with tools:
// without any there is nothing to choose.
func (e *encoder) tools(c *llm.ChatRequest) error {
	if len(c.Tools) == 0 {
		return nil
	}
	e.b = append(e.b, `,"tools":[`...)
	for j := range c.Tools {
		t := &c.Tools[j]
		param := "tools[" + strconv.Itoa(j) + "]"
		if t.Type != "function" || t.Function == nil {
			return invalid(param+".type", "only function tools are supported by this provider")
		}
		f := t.Function
		if f.Name == "" {
			return invalid(param+".function.name", "tools need a function name")
		}
		if j > 0 {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, `{"name":`...)
		e.b = llm.AppendJSONString(e.b, f.Name)
		if f.Description != "" {
			e.b = append(e.b, `,"description":`...)
			e.b = llm.AppendJSONString(e.b, f.Description)
		}
		e.b = append(e.b, `,"input_schema":`...)
		// Parameters passed encoding/json's validation (or were built
		// from JSON another surface validated), so only its shape is
		// checked here.
		schema := strings.TrimSpace(view(f.Parameters))
		switch {
		case schema == "" || schema == "null":
			e.b = append(e.b, defaultSchema...)
		case schema[0] != '{':
			return invalid(param+".function.parameters", "function parameters must be a JSON Schema object")
		case !hasType(schema):
			// OpenAI takes {} for "no parameters"; Anthropic insists
			// on the object type being spelt out.
			e.b = append(e.b, `{"type":"object"`...)
			if rest := strings.TrimSpace(schema[1:]); rest != "}" {
				e.b = append(e.b, ',')
				e.b = append(e.b, rest...)
			} else {
				e.b = append(e.b, '}')
			}
		default:
			e.b = append(e.b, schema...)
		}
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, ']')
	mode, name := c.ToolChoiceMode()
	switch mode {
	case llm.ToolChoiceRequired:
		e.b = append(e.b, `,"tool_choice":{"type":"any"}`...)
	case llm.ToolChoiceNone:
		e.b = append(e.b, `,"tool_choice":{"type":"none"}`...)
	case llm.ToolChoiceFunction:
		e.b = append(e.b, `,"tool_choice":{"type":"tool","name":`...)
		e.b = llm.AppendJSONString(e.b, name)
		e.b = append(e.b, '}')
	default:
		if len(c.ToolChoice) > 0 {
			e.b = append(e.b, `,"tool_choice":{"type":"auto"}`...)
		}
	}
	return nil
}

// readParts reads message i's content as parts: a string is one text
// part (plain is true), null or absent content no part. The parts view
// raw's bytes and are valid until the next call.
func (e *encoder) readParts(i int, raw json.RawMessage) (parts []part, plain bool, err error) {
	e.parts = e.parts[:0]
	s := strings.TrimSpace(view(raw))
	if s == "" || s == "null" {
		return nil, false, nil
	}
	switch s[0] {
	case '"':
		e.parts = append(e.parts, part{typ: "text", text: s})
		return e.parts, true, nil
	case '[':
	default:
		return nil, false, invalid("messages["+strconv.Itoa(i)+"].content", "%s", llm.ErrContent.Error())
	}
	sc := jsonscan.New(raw)
	sc.Array(func(j int) bool {
		var p part
		var text []byte // the text's literal, when it is a string
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "type":
				p.typ = sc.OptStr()
			case "text":
				if sc.Peek() == jsonscan.String {
					text = sc.Raw()
				} else {
					text = nil
				}
			case "image_url":
				if sc.Peek() == jsonscan.String {
					p.url = sc.Str() // an older shorthand some clients send
					break
				}
				p.url = ""
				if sc.Peek() == jsonscan.Object {
					sc.Object(func(k []byte) bool {
						if string(k) == "url" {
							p.url = sc.OptStr()
						}
						return true
					})
				}
			}
			return true
		})
		switch p.typ {
		case "text":
			if text == nil {
				err = invalid(partParam(i, j)+".text", "text parts need a string text")
				return false
			}
			p.text = view(text)
		case "image_url":
			if p.url == "" {
				err = invalid(partParam(i, j)+".image_url.url", "image parts need a URL")
				return false
			}
		default:
			err = invalid(partParam(i, j)+".type", "content part type %q is not supported by this provider", p.typ)
			return false
		}
		e.parts = append(e.parts, p)
		return true
	})
	if err != nil {
		return nil, false, err
	}
	if sc.Err() != nil {
		// Content passed the request decoder's validation; this is
		// content built wrong, not a client's mistake to name.
		return nil, false, invalid("messages["+strconv.Itoa(i)+"].content", "%s", llm.ErrContent.Error())
	}
	return e.parts, false, nil
}

// validJSON reports whether s is one JSON value and nothing more.
func validJSON(s string) bool {
	sc := jsonscan.New(bytesOf(s))
	sc.Skip()
	return sc.End() == nil
}

// hasType reports whether schema, a JSON object the request decoder
// checked, has a top-level "type" member. It counts brackets and skips
// strings without checking anything again: JSON Schema writers (and
// encoding/json's sorted keys) often put "type" last, after the
// properties, and a checking walk over those cost more than gjson's
// lookup did.
func hasType(schema string) bool {
	depth := 0
	for i := 0; i < len(schema); i++ {
		switch schema[i] {
		case '"':
			start := i + 1
			for i++; i < len(schema) && schema[i] != '"'; i++ {
				if schema[i] == '\\' {
					i++
				}
			}
			if depth != 1 || i >= len(schema) || schema[start:i] != "type" {
				continue
			}
			j := i + 1
			for j < len(schema) && (schema[j] == ' ' || schema[j] == '\t' || schema[j] == '\n' || schema[j] == '\r') {
				j++
			}
			if j < len(schema) && schema[j] == ':' {
				return true // a key, not a value
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return false
}

// view returns b as a string without copying it. Only for reading input
// that nothing modifies while the view is in use; views never escape
// into values that outlive the call.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// bytesOf returns s as bytes without copying it, for the scanner, which
// only reads them.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
