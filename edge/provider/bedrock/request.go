package bedrock

import (
	"bytes"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// invalid is a 400 naming the request field at fault.
func invalid(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

// view is b as a string without a copy; b must not change while it is used.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// validJSON reports whether text is one JSON value, reading it with s.
func validJSON(s *jsonscan.Scanner, text string) bool {
	s.Reset(unsafe.Slice(unsafe.StringData(text), len(text)))
	s.Skip()
	return s.End() == nil
}

// encoder builds a Converse request body by appending JSON text; JSON
// the client sent (strings, schemas, arguments) is copied, not decoded.
type encoder struct {
	b []byte
	// role is the Converse role of the message still open for content
	// blocks, "" when none is: Converse wants user and assistant turns
	// to alternate, so consecutive turns of one role (a user turn after
	// tool results) merge into one message.
	role string
	// blocks counts the open message's blocks; messages counts messages.
	blocks, messages int
	scan             jsonscan.Scanner
}

// encodeRequest translates c into a Converse request. The model goes in
// the URL, not the body. Errors are 400 *llm.Error naming the field that
// cannot be translated.
func encodeRequest(c *llm.ChatRequest, sizeHint int) ([]byte, error) {
	if c.N != nil && *c.N > 1 {
		return nil, invalid("n", "n > 1 is not supported by this provider; send %d requests instead", *c.N)
	}
	e := encoder{b: make([]byte, 0, sizeHint+256)}
	e.b = append(e.b, `{"messages":[`...)
	for i := range c.Messages {
		if err := e.message(i, &c.Messages[i]); err != nil {
			return nil, err
		}
	}
	e.close()
	if e.messages == 0 {
		return nil, invalid("messages", "at least one user or assistant message with content is required")
	}
	e.b = append(e.b, ']')
	if err := e.system(c.Messages); err != nil {
		return nil, err
	}
	if err := e.inference(c); err != nil {
		return nil, err
	}
	if err := e.tools(c); err != nil {
		return nil, err
	}
	if c.TopK != nil {
		// Converse has no top_k; models that take one read it here.
		e.b = append(e.b, `,"additionalModelRequestFields":{"top_k":`...)
		e.b = strconv.AppendInt(e.b, int64(*c.TopK), 10)
		e.b = append(e.b, '}')
	}
	return append(e.b, '}'), nil
}

// open starts a block in a message of role, opening the message (or
// continuing the open one of the same role).
func (e *encoder) open(role string) {
	if e.role == role {
		e.b = append(e.b, ',')
		e.blocks++
		return
	}
	e.close()
	if e.messages > 0 {
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, `{"role":"`...)
	e.b = append(e.b, role...)
	e.b = append(e.b, `","content":[`...)
	e.role, e.blocks = role, 1
	e.messages++
}

func (e *encoder) close() {
	if e.role != "" {
		e.b = append(e.b, "]}"...)
		e.role = ""
	}
}

func msgParam(i int, field string) string {
	return "messages[" + strconv.Itoa(i) + "]." + field
}

// message writes message i's blocks. System messages go to the system
// field instead (system).
func (e *encoder) message(i int, m *llm.Message) error {
	switch m.Role {
	case llm.RoleSystem, llm.RoleDeveloper:
		return nil
	case llm.RoleUser:
		return e.content(i, "user", m.Content)
	case llm.RoleAssistant:
		if err := e.content(i, "assistant", m.Content); err != nil {
			return err
		}
		return e.toolUses(i, m.ToolCalls)
	case llm.RoleTool:
		return e.toolResult(i, m)
	}
	return invalid(msgParam(i, "role"), "unknown role %q", m.Role)
}

// content writes a message's text and image parts as blocks of role.
// Converse refuses blank text blocks, so they are left out. The content
// is read once, in order (jsonscan); it was checked when the request was
// decoded. A part's repeated key takes its last value.
func (e *encoder) content(i int, role string, raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	s := &e.scan
	s.Reset(raw)
	switch s.Peek() {
	case jsonscan.Null:
		return nil
	case jsonscan.String:
		e.text(role, s)
		return nil
	case jsonscan.Array:
	default:
		return invalid(msgParam(i, "content"), "%v", llm.ErrContent)
	}
	var err error
	s.Array(func(j int) bool {
		var (
			typ, url string
			text     []byte // the text's JSON string, quotes and escapes kept
			plain    string // and its value
		)
		if s.Peek() == jsonscan.Object {
			s.Object(func(k []byte) bool {
				switch string(k) {
				case "type":
					typ = s.OptStr()
				case "text":
					text, plain = nil, ""
					if s.Peek() == jsonscan.String {
						text, plain = rawStr(s)
					} else {
						s.Skip()
					}
				case "image_url":
					url = ""
					if s.Peek() != jsonscan.Object {
						s.Skip()
						return true
					}
					s.Object(func(k []byte) bool {
						if string(k) == "url" {
							url = s.OptStr()
						}
						return true
					})
				}
				return true
			})
		} else {
			s.Skip()
		}
		switch typ {
		case "text":
			e.appendText(role, text, plain)
		case "image_url":
			err = e.image(msgParam(i, "content["+strconv.Itoa(j)+"].image_url"), role, url)
		default:
			err = invalid(msgParam(i, "content["+strconv.Itoa(j)+"].type"), "content part type %q is not supported by this provider", typ)
		}
		return err == nil
	})
	if err == nil && s.Err() != nil {
		err = invalid(msgParam(i, "content"), "%v", llm.ErrContent)
	}
	return err
}

// rawStr reads a string value and returns both its JSON text and its
// value.
func rawStr(s *jsonscan.Scanner) (raw []byte, v string) {
	start := s.Offset()
	v = s.Str()
	return s.Bytes()[start:s.Offset()], v
}

// text writes the string s holds next as a text block.
func (e *encoder) text(role string, s *jsonscan.Scanner) {
	raw, v := rawStr(s)
	e.appendText(role, raw, v)
}

// appendText writes a text block holding raw, the JSON string of v; a
// blank one is left out.
func (e *encoder) appendText(role string, raw []byte, v string) {
	raw = bytes.TrimRight(raw, " \t\r\n")
	if len(raw) == 0 || strings.TrimSpace(v) == "" {
		return
	}
	e.open(role)
	e.b = append(e.b, `{"text":`...)
	e.b = append(e.b, raw...)
	e.b = append(e.b, '}')
}

// image writes an image block. Converse takes an image's bytes only, so
// a data: URL is needed; Meridian does not fetch URLs for a client.
func (e *encoder) image(param, role, u string) error {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return invalid(param, "this provider takes images as data: URLs (base64) only")
	}
	mime, data, ok := strings.Cut(rest, ",")
	mime, isB64 := strings.CutSuffix(mime, ";base64")
	if !ok || !isB64 {
		return invalid(param, "image data: URLs must be base64")
	}
	format, ok := strings.CutPrefix(mime, "image/")
	if format == "jpg" {
		format = "jpeg"
	}
	if !ok || (format != "png" && format != "jpeg" && format != "gif" && format != "webp") {
		return invalid(param, "image type %q is not supported by this provider (png, jpeg, gif, webp)", mime)
	}
	if _, err := base64.StdEncoding.DecodeString(data); err != nil {
		return invalid(param, "image data is not valid base64")
	}
	e.open(role)
	e.b = append(e.b, `{"image":{"format":"`...)
	e.b = append(e.b, format...)
	e.b = append(e.b, `","source":{"bytes":"`...)
	e.b = append(e.b, data...)
	e.b = append(e.b, `"}}}`...)
	return nil
}

// toolUses writes an assistant turn's calls as toolUse blocks; their
// arguments, a JSON text in OpenAI's format, must hold an object.
func (e *encoder) toolUses(i int, calls []llm.ToolCall) error {
	for j := range calls {
		tc := &calls[j]
		param := msgParam(i, "tool_calls["+strconv.Itoa(j)+"]")
		if tc.ID == "" || tc.Function.Name == "" {
			return invalid(param, "tool calls need an id and a function name")
		}
		args := strings.TrimSpace(tc.Function.Arguments)
		if args == "" {
			args = "{}"
		}
		if args[0] != '{' || !validJSON(&e.scan, args) {
			return invalid(param+".function.arguments", "tool call arguments must be a JSON object")
		}
		e.open("assistant")
		e.b = append(e.b, `{"toolUse":{"toolUseId":`...)
		e.b = llm.AppendJSONString(e.b, tc.ID)
		e.b = append(e.b, `,"name":`...)
		e.b = llm.AppendJSONString(e.b, tc.Function.Name)
		e.b = append(e.b, `,"input":`...)
		e.b = append(e.b, args...)
		e.b = append(e.b, "}}"...)
	}
	return nil
}

// toolResult writes a tool message as a toolResult block of a user turn.
func (e *encoder) toolResult(i int, m *llm.Message) error {
	if m.ToolCallID == "" {
		return invalid(msgParam(i, "tool_call_id"), "tool messages need the tool_call_id they answer")
	}
	text, ok := m.Text()
	if !ok {
		return invalid(msgParam(i, "content"), "tool results must be text")
	}
	e.open("user")
	e.b = append(e.b, `{"toolResult":{"toolUseId":`...)
	e.b = llm.AppendJSONString(e.b, m.ToolCallID)
	e.b = append(e.b, `,"content":[{"text":`...)
	if text == "" {
		text = " " // Converse refuses an empty text
	}
	e.b = llm.AppendJSONString(e.b, text)
	e.b = append(e.b, "}]}}"...)
	return nil
}

// system writes the system field from every system and developer
// message, wherever it stands: Converse has no system turns.
func (e *encoder) system(msgs []llm.Message) error {
	n := 0
	for i := range msgs {
		m := &msgs[i]
		if m.Role != llm.RoleSystem && m.Role != llm.RoleDeveloper {
			continue
		}
		text, ok := m.Text()
		if !ok {
			return invalid(msgParam(i, "content"), "system messages must be text")
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if n == 0 {
			e.b = append(e.b, `,"system":[`...)
		} else {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, `{"text":`...)
		e.b = llm.AppendJSONString(e.b, text)
		e.b = append(e.b, '}')
		n++
	}
	if n > 0 {
		e.b = append(e.b, ']')
	}
	return nil
}

// inference writes inferenceConfig: max tokens, sampling, stops.
func (e *encoder) inference(c *llm.ChatRequest) error {
	start := len(e.b)
	e.b = append(e.b, `,"inferenceConfig":{`...)
	first := true
	sep := func() {
		if !first {
			e.b = append(e.b, ',')
		}
		first = false
	}
	if mt := c.MaxCompletionTokens; mt != nil || c.MaxTokens != nil {
		if mt == nil {
			mt = c.MaxTokens
		}
		sep()
		e.b = append(e.b, `"maxTokens":`...)
		e.b = strconv.AppendInt(e.b, int64(*mt), 10)
	}
	for _, f := range [...]struct {
		name, key string
		v         *float64
	}{{"temperature", "temperature", c.Temperature}, {"top_p", "topP", c.TopP}} {
		if f.v == nil {
			continue
		}
		if math.IsNaN(*f.v) || math.IsInf(*f.v, 0) {
			return invalid(f.name, "%s must be a finite number", f.name)
		}
		sep()
		e.b = append(e.b, '"')
		e.b = append(e.b, f.key...)
		e.b = append(e.b, '"', ':')
		e.b = strconv.AppendFloat(e.b, *f.v, 'g', -1, 64)
	}
	if len(c.Stop) > 0 {
		n := 0
		s := &e.scan
		s.Reset(c.Stop)
		add := func() {
			if s.Peek() != jsonscan.String {
				s.Skip()
				return
			}
			raw, v := rawStr(s)
			if v == "" {
				return
			}
			if n == 0 {
				sep()
				e.b = append(e.b, `"stopSequences":[`...)
			} else {
				e.b = append(e.b, ',')
			}
			e.b = append(e.b, bytes.TrimRight(raw, " \t\r\n")...)
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
	if first {
		e.b = e.b[:start]
		return nil
	}
	e.b = append(e.b, '}')
	return nil
}

// tools writes toolConfig. Converse has no "none" choice: the tools are
// still declared (a history with tool calls needs them) and the choice
// left to the model.
func (e *encoder) tools(c *llm.ChatRequest) error {
	if len(c.Tools) == 0 {
		return nil
	}
	e.b = append(e.b, `,"toolConfig":{"tools":[`...)
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
		e.b = append(e.b, `{"toolSpec":{"name":`...)
		e.b = llm.AppendJSONString(e.b, f.Name)
		if f.Description != "" {
			e.b = append(e.b, `,"description":`...)
			e.b = llm.AppendJSONString(e.b, f.Description)
		}
		e.b = append(e.b, `,"inputSchema":{"json":`...)
		schema := strings.TrimSpace(view(f.Parameters))
		switch {
		case schema == "" || schema == "null":
			e.b = append(e.b, `{"type":"object","properties":{}}`...)
		case schema[0] != '{':
			return invalid(param+".function.parameters", "function parameters must be a JSON Schema object")
		default:
			e.b = append(e.b, schema...)
		}
		e.b = append(e.b, "}}}"...)
	}
	e.b = append(e.b, ']')
	switch mode, name := c.ToolChoiceMode(); mode {
	case llm.ToolChoiceRequired:
		e.b = append(e.b, `,"toolChoice":{"any":{}}`...)
	case llm.ToolChoiceFunction:
		e.b = append(e.b, `,"toolChoice":{"tool":{"name":`...)
		e.b = llm.AppendJSONString(e.b, name)
		e.b = append(e.b, "}}"...)
	}
	e.b = append(e.b, '}')
	return nil
}
