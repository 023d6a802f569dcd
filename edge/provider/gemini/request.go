package gemini

import (
	"net/http"
	"path"
	"strconv"
	"strings"
	"unsafe"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// skipSignature is the thought signature Google documents for function
// calls whose real signature is unknown: Gemini 3 models reject a
// history whose function calls carry none, and the OpenAI format has no
// field to bring the real one back. It goes on the first function call
// of each assistant turn, where Gemini puts its own.
const skipSignature = "skip_thought_signature_validator"

// invalid is a 400 naming the request field at fault.
func invalid(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

// encoder builds a GenerateContentRequest body by appending JSON text.
// Text that arrives as valid JSON (string contents, parameter schemas,
// tool call arguments once checked) is copied, not decoded and encoded
// again: a 4 KB request is translated in a few microseconds.
type encoder struct {
	b []byte
	// role is the role of the content still open for parts, "" when none
	// is: consecutive messages of one Gemini role merge into one content,
	// as Gemini wants a tool turn's function responses together.
	role string
	// contents counts the contents opened.
	contents int
	// calls maps tool call IDs to function names for the tool results
	// that answer them; conversations are short, so a slice beats a map.
	calls []namedCall
	// scan reads content parts, response_format and the JSON texts the
	// encoder checks, one at a time.
	scan jsonscan.Scanner
}

type namedCall struct{ id, name string }

// encodeRequest translates c into a Gemini GenerateContentRequest.
// Errors are 400 *llm.Error naming the field that cannot be translated.
func encodeRequest(c *llm.ChatRequest, sizeHint int) ([]byte, error) {
	e := encoder{b: make([]byte, 0, sizeHint+512)}
	e.b = append(e.b, '{')
	if err := e.system(c.Messages); err != nil {
		return nil, err
	}
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, `"contents":[`...)
	for i := range c.Messages {
		if err := e.message(i, &c.Messages[i]); err != nil {
			return nil, err
		}
	}
	if e.role != "" {
		e.b = append(e.b, "]}"...)
	}
	if e.contents == 0 {
		return nil, invalid("messages", "messages must hold at least one user or assistant message with content")
	}
	e.b = append(e.b, ']')
	if err := e.tools(c); err != nil {
		return nil, err
	}
	if err := e.generationConfig(c); err != nil {
		return nil, err
	}
	return append(e.b, '}'), nil
}

// system writes systemInstruction from every system and developer
// message. Gemini has one system instruction, so their places in the
// conversation are lost; their order is kept.
func (e *encoder) system(msgs []llm.Message) error {
	n := 0
	for i := range msgs {
		m := &msgs[i]
		if m.Role != llm.RoleSystem && m.Role != llm.RoleDeveloper {
			continue
		}
		err := e.forEachPart(m.Content, func(j int, p *reqPart) error {
			if p.typ != "text" {
				return invalid(partParam(i, j, "type"), "system messages may hold only text, not %q parts", p.typ)
			}
			return e.systemText(&n, p.text)
		}, func(raw []byte) error {
			return e.systemText(&n, raw)
		})
		if err != nil {
			if _, ok := err.(*llm.Error); !ok {
				return invalid(msgParam(i, "content"), "content must be a string, an array of content parts or null")
			}
			return err
		}
	}
	if n > 0 {
		e.b = append(e.b, "]}"...)
	}
	return nil
}

func (e *encoder) systemText(n *int, raw []byte) error {
	if !isTextRaw(raw) {
		return nil
	}
	if *n == 0 {
		e.b = append(e.b, `"systemInstruction":{"parts":[`...)
	} else {
		e.b = append(e.b, ',')
	}
	*n++
	e.b = append(e.b, `{"text":`...)
	e.b = append(e.b, raw...)
	e.b = append(e.b, '}')
	return nil
}

// isTextRaw reports whether raw is a JSON string holding some text: an
// empty text part is an error to Gemini, so empty texts are dropped.
func isTextRaw(raw []byte) bool {
	return len(raw) > 2 && raw[0] == '"'
}

// part opens a part of a content with the given role, opening the
// content itself unless the previous part's content has that role.
func (e *encoder) part(role string) {
	if e.role == role {
		e.b = append(e.b, ',')
		return
	}
	if e.role != "" {
		e.b = append(e.b, "]}"...)
	}
	if e.contents > 0 {
		e.b = append(e.b, ',')
	}
	e.contents++
	e.role = role
	e.b = append(e.b, `{"role":"`...)
	e.b = append(e.b, role...)
	e.b = append(e.b, `","parts":[`...)
}

func msgParam(i int, field string) string {
	return "messages[" + strconv.Itoa(i) + "]." + field
}

func partParam(i, j int, field string) string {
	return "messages[" + strconv.Itoa(i) + "].content[" + strconv.Itoa(j) + "]." + field
}

// reqPart is one element of a content array, read whole before the
// encoder looks at it, since its type may come after its data. Raw
// fields hold a value's JSON text as it is; a field of another type than
// the one wanted reads as absent.
type reqPart struct {
	typ           string
	text, refusal []byte // raw JSON
	// imageURL is image_url, or its url when it is an object.
	imageURL string
	// audioData and audioFormat are input_audio's; hasAudio says data
	// is a string, even an empty one.
	audioData, audioFormat string
	hasAudio               bool
	fileData               string // file.file_data
}

// readPart reads a content part into p. A part that is not an object
// has no fields.
func readPart(sc *jsonscan.Scanner, p *reqPart) {
	*p = reqPart{}
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return
	}
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			p.typ = sc.OptStr()
		case "text":
			p.text = sc.Raw()
		case "refusal":
			p.refusal = sc.Raw()
		case "image_url":
			if sc.Peek() == jsonscan.Object {
				p.imageURL = ""
				sc.Object(func(k []byte) bool {
					if string(k) == "url" {
						p.imageURL = sc.OptStr()
					}
					return true
				})
			} else {
				p.imageURL = sc.OptStr()
			}
		case "input_audio":
			if sc.Peek() != jsonscan.Object {
				return true
			}
			sc.Object(func(k []byte) bool {
				switch string(k) {
				case "data":
					p.hasAudio = sc.Peek() == jsonscan.String
					p.audioData = sc.OptStr()
				case "format":
					p.audioFormat = sc.OptStr()
				}
				return true
			})
		case "file":
			if sc.Peek() != jsonscan.Object {
				return true
			}
			sc.Object(func(k []byte) bool {
				if string(k) == "file_data" {
					p.fileData = sc.OptStr()
				}
				return true
			})
		}
		return true
	})
}

// forEachPart calls each for each element of a content array, or str
// with the raw JSON string of a string content. Null content calls
// neither. Content is JSON that the request decoder checked or that
// encoding/json produced; if it is not valid after all, the error is not
// an *llm.Error, which callers turn into a 400 naming the content.
func (e *encoder) forEachPart(content []byte, each func(j int, p *reqPart) error, str func(raw []byte) error) error {
	c := trimSpace(content)
	if len(c) == 0 || string(c) == "null" {
		return nil
	}
	switch c[0] {
	case '"':
		return str(c)
	case '[':
		sc := &e.scan
		sc.Reset(c)
		var err error
		var p reqPart
		sc.Array(func(j int) bool {
			readPart(sc, &p)
			if sc.Err() != nil {
				return false
			}
			err = each(j, &p)
			return err == nil
		})
		if err == nil {
			err = sc.Err()
		}
		return err
	}
	return llm.ErrContent
}

// valid reports whether text is one valid JSON value. text is only
// read, so it is scanned in place rather than copied to a []byte.
func (e *encoder) valid(text string) bool {
	e.scan.Reset(unsafe.Slice(unsafe.StringData(text), len(text)))
	e.scan.Skip()
	return e.scan.End() == nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// message writes one message's parts.
func (e *encoder) message(i int, m *llm.Message) error {
	switch m.Role {
	case llm.RoleSystem, llm.RoleDeveloper:
		return nil // in systemInstruction
	case llm.RoleUser, llm.RoleAssistant:
		role := llm.RoleTo(llm.FormatGemini, m.Role)
		if err := e.content(i, role, m.Content); err != nil {
			return err
		}
		if m.Role == llm.RoleAssistant {
			return e.toolCalls(i, role, m.ToolCalls)
		}
		return nil
	case llm.RoleTool:
		name := e.callName(m.ToolCallID)
		if name == "" {
			return invalid(msgParam(i, "tool_call_id"), "tool_call_id %q does not match a tool call of an earlier assistant message", m.ToolCallID)
		}
		return e.functionResponse(i, llm.RoleTo(llm.FormatGemini, m.Role), name, m)
	case "function":
		// OpenAI's deprecated function role names the function itself.
		if m.Name == "" {
			return invalid(msgParam(i, "name"), "function messages must name their function")
		}
		return e.functionResponse(i, llm.RoleTo(llm.FormatGemini, llm.RoleTool), m.Name, m)
	}
	return invalid(msgParam(i, "role"), "unknown message role %q", m.Role)
}

func (e *encoder) callName(id string) string {
	for k := len(e.calls) - 1; k >= 0; k-- {
		if e.calls[k].id == id {
			return e.calls[k].name
		}
	}
	return ""
}

// content writes a user or assistant message's content parts.
func (e *encoder) content(i int, role string, content []byte) error {
	err := e.forEachPart(content, func(j int, p *reqPart) error {
		return e.contentPart(i, j, role, p)
	}, func(raw []byte) error {
		if len(raw) > 2 {
			e.part(role)
			e.b = append(e.b, `{"text":`...)
			e.b = append(e.b, raw...)
			e.b = append(e.b, '}')
		}
		return nil
	})
	if err != nil {
		if _, ok := err.(*llm.Error); !ok {
			return invalid(msgParam(i, "content"), "content must be a string, an array of content parts or null")
		}
	}
	return err
}

func (e *encoder) contentPart(i, j int, role string, p *reqPart) error {
	switch p.typ {
	case "text":
		if isTextRaw(p.text) {
			e.part(role)
			e.b = append(e.b, `{"text":`...)
			e.b = append(e.b, p.text...)
			e.b = append(e.b, '}')
		}
		return nil
	case "refusal":
		// An assistant's earlier refusal is text for the model's context.
		if isTextRaw(p.refusal) {
			e.part(role)
			e.b = append(e.b, `{"text":`...)
			e.b = append(e.b, p.refusal...)
			e.b = append(e.b, '}')
		}
		return nil
	case "image_url":
		if p.imageURL == "" {
			return invalid(partParam(i, j, "image_url.url"), "image_url must hold a url")
		}
		return e.media(partParam(i, j, "image_url.url"), role, p.imageURL, "image/jpeg", true)
	case "input_audio":
		if !p.hasAudio || p.audioFormat == "" {
			return invalid(partParam(i, j, "input_audio"), "input_audio must hold data and a format")
		}
		e.part(role)
		e.inlineData("audio/"+p.audioFormat, p.audioData)
		return nil
	case "file":
		if p.fileData == "" {
			return invalid(partParam(i, j, "file"), "files must be given inline as file_data; file IDs cannot be sent to this provider")
		}
		return e.media(partParam(i, j, "file.file_data"), role, p.fileData, "application/octet-stream", false)
	default:
		return invalid(partParam(i, j, "type"), "content part type %q is not supported by this provider", p.typ)
	}
}

// media writes an inlineData part for a data: URL or, when urls is set,
// a fileData part for an http(s) URL.
func (e *encoder) media(param, role, u, defaultType string, urls bool) error {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		header, data, ok := strings.Cut(rest, ",")
		mime, isB64 := strings.CutSuffix(header, ";base64")
		if !ok || !isB64 {
			return invalid(param, "data URLs must be base64 encoded")
		}
		if k := strings.IndexByte(mime, ';'); k >= 0 {
			mime = mime[:k]
		}
		if mime == "" {
			mime = defaultType
		}
		e.part(role)
		e.inlineData(mime, data)
		return nil
	}
	if urls && (hasPrefixFold(u, "https://") || hasPrefixFold(u, "http://")) {
		e.part(role)
		e.b = append(e.b, `{"fileData":{"mimeType":"`...)
		e.b = append(e.b, imageType(u)...)
		e.b = append(e.b, `","fileUri":`...)
		e.b = llm.AppendJSONString(e.b, u)
		e.b = append(e.b, `}}`...)
		return nil
	}
	if urls {
		return invalid(param, "image URLs must be http(s) or base64 data: URLs")
	}
	return invalid(param, "file_data must be a base64 data: URL")
}

func (e *encoder) inlineData(mime, data string) {
	e.b = append(e.b, `{"inlineData":{"mimeType":`...)
	e.b = llm.AppendJSONString(e.b, mime)
	e.b = append(e.b, `,"data":`...)
	e.b = llm.AppendJSONString(e.b, data)
	e.b = append(e.b, `}}`...)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// imageType guesses an image URL's media type from its extension;
// Gemini needs one for fileData and most image URLs are JPEGs.
func imageType(u string) string {
	if k := strings.IndexAny(u, "?#"); k >= 0 {
		u = u[:k]
	}
	switch strings.ToLower(path.Ext(u)) {
	case ".png":
		return "image/png"
	case ".webp":
		return "image/webp"
	case ".gif":
		return "image/gif"
	case ".heic":
		return "image/heic"
	case ".heif":
		return "image/heif"
	}
	return "image/jpeg"
}

// toolCalls writes an assistant message's tool calls as functionCall
// parts and remembers their names for the tool results that follow.
func (e *encoder) toolCalls(i int, role string, calls []llm.ToolCall) error {
	for j := range calls {
		tc := &calls[j]
		param := msgParam(i, "tool_calls["+strconv.Itoa(j)+"]")
		if tc.Type != "" && tc.Type != "function" {
			return invalid(param+".type", "tool call type %q is not supported by this provider", tc.Type)
		}
		if tc.Function.Name == "" {
			return invalid(param+".function.name", "tool calls must name their function")
		}
		args := strings.TrimSpace(tc.Function.Arguments)
		if args == "" {
			args = "{}"
		} else if args[0] != '{' || !e.valid(args) {
			return invalid(param+".function.arguments", "tool call arguments must be a JSON object")
		}
		e.part(role)
		e.b = append(e.b, `{"functionCall":{"name":`...)
		e.b = llm.AppendJSONString(e.b, tc.Function.Name)
		e.b = append(e.b, `,"args":`...)
		e.b = append(e.b, args...)
		e.b = append(e.b, '}')
		if j == 0 {
			e.b = append(e.b, `,"thoughtSignature":"`+skipSignature+`"`...)
		}
		e.b = append(e.b, '}')
		if tc.ID != "" {
			e.calls = append(e.calls, namedCall{tc.ID, tc.Function.Name})
		}
	}
	return nil
}

// functionResponse writes a tool result. Gemini wants an object: a
// result that is a JSON object goes as it is, any other text as
// {"content": text}.
func (e *encoder) functionResponse(i int, role, name string, m *llm.Message) error {
	text, ok := m.Text()
	if !ok {
		return invalid(msgParam(i, "content"), "tool results may hold only text")
	}
	e.part(role)
	e.b = append(e.b, `{"functionResponse":{"name":`...)
	e.b = llm.AppendJSONString(e.b, name)
	e.b = append(e.b, `,"response":`...)
	if t := strings.TrimSpace(text); len(t) > 0 && t[0] == '{' && e.valid(t) {
		e.b = append(e.b, t...)
	} else {
		e.b = append(e.b, `{"content":`...)
		e.b = llm.AppendJSONString(e.b, text)
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, "}}"...)
	return nil
}

// tools writes tools and toolConfig. Parameters go as
// parametersJsonSchema, which takes JSON Schema as OpenAI clients write
// it; the older parameters field takes an OpenAPI subset and rejects
// common keys such as additionalProperties, which strict mode requires.
func (e *encoder) tools(c *llm.ChatRequest) error {
	if len(c.Tools) == 0 {
		return nil
	}
	e.b = append(e.b, `,"tools":[{"functionDeclarations":[`...)
	for i := range c.Tools {
		t := &c.Tools[i]
		param := "tools[" + strconv.Itoa(i) + "]"
		if t.Type != "function" || t.Function == nil {
			return invalid(param+".type", "tool type %q is not supported by this provider; only function tools are", t.Type)
		}
		if t.Function.Name == "" {
			return invalid(param+".function.name", "tools must name their function")
		}
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, `{"name":`...)
		e.b = llm.AppendJSONString(e.b, t.Function.Name)
		if t.Function.Description != "" {
			e.b = append(e.b, `,"description":`...)
			e.b = llm.AppendJSONString(e.b, t.Function.Description)
		}
		if p := trimSpace(t.Function.Parameters); len(p) > 0 && string(p) != "null" {
			if p[0] != '{' {
				return invalid(param+".function.parameters", "function parameters must be a JSON Schema object")
			}
			e.b = append(e.b, `,"parametersJsonSchema":`...)
			e.b = append(e.b, p...)
		}
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, "]}]"...)

	if len(c.ToolChoice) == 0 || string(c.ToolChoice) == "null" {
		return nil // Gemini's default is AUTO
	}
	mode, name := c.ToolChoiceMode()
	e.b = append(e.b, `,"toolConfig":{"functionCallingConfig":{"mode":"`...)
	switch mode {
	case llm.ToolChoiceNone:
		e.b = append(e.b, `NONE"`...)
	case llm.ToolChoiceRequired:
		e.b = append(e.b, `ANY"`...)
	case llm.ToolChoiceFunction:
		found := false
		for i := range c.Tools {
			found = found || c.Tools[i].Function.Name == name
		}
		if !found {
			return invalid("tool_choice", "tool_choice names function %q, which is not among the tools", name)
		}
		e.b = append(e.b, `ANY","allowedFunctionNames":[`...)
		e.b = llm.AppendJSONString(e.b, name)
		e.b = append(e.b, ']')
	default:
		e.b = append(e.b, `AUTO"`...)
	}
	e.b = append(e.b, "}}"...)
	return nil
}

// generationConfig writes the sampling and output settings, if any.
func (e *encoder) generationConfig(c *llm.ChatRequest) error {
	start := len(e.b)
	e.b = append(e.b, `,"generationConfig":{`...)
	open := len(e.b)
	field := func(name string) {
		if len(e.b) > open {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, '"')
		e.b = append(e.b, name...)
		e.b = append(e.b, `":`...)
	}
	if stops := c.StopList(); len(stops) > 0 {
		field("stopSequences")
		e.b = append(e.b, '[')
		for k, s := range stops {
			if k > 0 {
				e.b = append(e.b, ',')
			}
			e.b = llm.AppendJSONString(e.b, s)
		}
		e.b = append(e.b, ']')
	}
	if c.N != nil {
		field("candidateCount")
		e.b = strconv.AppendInt(e.b, int64(*c.N), 10)
	}
	maxTokens := c.MaxCompletionTokens
	if maxTokens == nil {
		maxTokens = c.MaxTokens
	}
	if maxTokens != nil {
		field("maxOutputTokens")
		e.b = strconv.AppendInt(e.b, int64(*maxTokens), 10)
	}
	if c.Temperature != nil {
		field("temperature")
		e.b = strconv.AppendFloat(e.b, *c.Temperature, 'g', -1, 64)
	}
	if c.TopP != nil {
		field("topP")
		e.b = strconv.AppendFloat(e.b, *c.TopP, 'g', -1, 64)
	}
	if c.TopK != nil {
		field("topK")
		e.b = strconv.AppendInt(e.b, int64(*c.TopK), 10)
	}
	if c.Seed != nil {
		field("seed")
		e.b = strconv.AppendInt(e.b, *c.Seed, 10)
	}
	if rf := trimSpace(c.ResponseFormat); len(rf) > 0 && rf[0] == '{' {
		var typ string
		var schema []byte
		sc := &e.scan
		sc.Reset(rf)
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "type":
				typ = sc.OptStr()
			case "json_schema":
				if sc.Peek() != jsonscan.Object {
					return true
				}
				sc.Object(func(k []byte) bool {
					if string(k) == "schema" && sc.Peek() == jsonscan.Object {
						schema = sc.Raw()
					}
					return true
				})
			}
			return true
		})
		switch typ {
		case "json_object":
			field("responseMimeType")
			e.b = append(e.b, `"application/json"`...)
		case "json_schema":
			field("responseMimeType")
			e.b = append(e.b, `"application/json"`...)
			// responseJsonSchema, not responseSchema, for the reason
			// tools use parametersJsonSchema.
			if schema != nil {
				field("responseJsonSchema")
				e.b = append(e.b, schema...)
			}
		}
	}
	if len(e.b) == open {
		e.b = e.b[:start]
		return nil
	}
	e.b = append(e.b, '}')
	return nil
}
