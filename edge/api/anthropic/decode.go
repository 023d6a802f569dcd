package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Requests are read in one pass with jsonscan, not decoded with
// encoding/json: translation sits on the path of every request
// (BenchmarkTranslateRequest). Strings and raw values of the canonical
// request point into the body, so the body must not change afterwards;
// nothing in the request path changes it.

func bad(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, "%s: "+format, append([]any{param}, args...)...)
}

func missing(param string) *llm.Error { return bad(param, "Field required") }

// DecodeMessages translates a Messages API body into a canonical request.
// Errors name the field the way Anthropic does, e.g.
// "messages.1.content.0.type".
func DecodeMessages(body []byte) (*llm.Request, *llm.Error) {
	return decodeBody(body, false)
}

// DecodeCountTokens translates a count_tokens body, which is a Messages
// body without max_tokens, into a canonical OpCountTokens request.
func DecodeCountTokens(body []byte) (*llm.Request, *llm.Error) {
	req, e := decodeBody(body, true)
	if e != nil {
		return nil, e
	}
	req.Op, req.Stream, req.IncludeUsage = llm.OpCountTokens, false, false
	return req, nil
}

func decodeBody(body []byte, count bool) (*llm.Request, *llm.Error) {
	// jsonscan accepts any bytes inside strings; JSON is UTF-8.
	if at := api.InvalidUTF8(body); at >= 0 {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is not valid UTF-8: invalid byte at offset %d.", at)
	}
	s := jsonscan.New(body)
	if s.Peek() != jsonscan.Object {
		s.Skip()
		if s.Err() != nil {
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is not valid JSON: %v", s.Err())
		}
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body must be a JSON object.")
	}
	c := &llm.ChatRequest{HasExtra: true}
	var e *llm.Error
	var msgs []byte
	s.Object(func(k []byte) bool {
		switch s.Peek() {
		case jsonscan.Null:
			if !knownKey(k) {
				c.Extra = append(c.Extra, llm.Field{Name: string(k), Raw: s.Raw()})
			} else {
				s.Null()
			}
			return true
		case jsonscan.Invalid:
			s.Skip() // records the syntax error
			return false
		}
		switch string(k) {
		case "model":
			if s.Peek() != jsonscan.String {
				e = bad("model", "Input should be a valid string")
				return false
			}
			c.Model = s.Str()
		case "max_tokens":
			n, ok := int64(0), s.Peek() == jsonscan.Number
			if ok {
				n, ok = s.Int()
			}
			if !ok || n < 1 {
				e = bad("max_tokens", "Input should be a positive integer")
				return false
			}
			m := int(n)
			c.MaxTokens = &m
		case "stream":
			if s.Peek() != jsonscan.Bool {
				e = bad("stream", "Input should be a valid boolean")
				return false
			}
			c.Stream = s.Bool()
		case "temperature", "top_p":
			if s.Peek() != jsonscan.Number {
				e = bad(string(k), "Input should be a valid number")
				return false
			}
			x := s.Float()
			if string(k) == "temperature" {
				c.Temperature = &x
			} else {
				c.TopP = &x
			}
		case "top_k":
			n, ok := int64(0), s.Peek() == jsonscan.Number
			if ok {
				n, ok = s.Int()
			}
			if !ok {
				e = bad("top_k", "Input should be a valid integer")
				return false
			}
			kk := int(n)
			c.TopK = &kk
		case "stop_sequences":
			e = decodeStop(s, c)
		case "metadata":
			if s.Peek() != jsonscan.Object {
				e = bad("metadata", "Input should be a valid dictionary")
				return false
			}
			s.Object(func(k []byte) bool {
				if string(k) == "user_id" && s.Peek() == jsonscan.String {
					c.User = s.Str()
				}
				return true
			})
		case "system":
			e = decodeSystem(s, c)
		case "messages":
			// Read after the rest: the system prompt comes first in the
			// canonical request, wherever it stands in the body.
			msgs = s.Raw()
		case "tools":
			e = decodeTools(s, c)
		case "tool_choice":
			e = decodeToolChoice(s, c)
		default:
			// Kept for the cache key, which hashes the fields no
			// decoder reads without reading the body again.
			c.Extra = append(c.Extra, llm.Field{Name: string(k), Raw: s.Raw()})
		}
		return e == nil
	})
	if err := s.End(); err != nil && e == nil {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is not valid JSON: %v", err)
	}
	if e != nil {
		return nil, e
	}
	switch {
	case c.Model == "":
		return nil, missing("model")
	case len(c.Model) > 256:
		return nil, bad("model", "Input should be at most 256 characters")
	case c.MaxTokens == nil && !count:
		return nil, missing("max_tokens")
	case msgs == nil:
		return nil, missing("messages")
	}
	if e := decodeMessages(jsonscan.New(msgs), c); e != nil {
		return nil, e
	}
	return &llm.Request{Op: llm.OpChat, Model: c.Model, Stream: c.Stream, IncludeUsage: true, Chat: c}, nil
}

// knownKey reports whether decodeBody reads the top-level field k.
func knownKey(k []byte) bool {
	switch string(k) {
	case "model", "max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
		"system", "messages", "tools", "tool_choice":
		return true
	}
	return false
}

func decodeStop(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Array {
		return bad("stop_sequences", "Input should be a valid list")
	}
	var stops []string
	var e *llm.Error
	s.Array(func(i int) bool {
		if s.Peek() != jsonscan.String {
			e = bad("stop_sequences."+strconv.Itoa(i), "Input should be a valid string")
			return false
		}
		stops = append(stops, s.Str())
		return true
	})
	if e != nil {
		return e
	}
	c.Stop, _ = json.Marshal(stops)
	return nil
}

func decodeSystem(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	var content json.RawMessage
	switch s.Peek() {
	case jsonscan.String:
		content = s.Raw() // already a JSON string
	case jsonscan.Array:
		var b strings.Builder
		var e *llm.Error
		s.Array(func(i int) bool {
			text, ok, err := textBlock(s)
			if err != nil || !ok {
				e = bad(fmt.Sprintf("system.%d.type", i), "system blocks must be text blocks")
				return false
			}
			if i > 0 {
				b.WriteString("\n\n")
			}
			b.WriteString(text)
			return true
		})
		if e != nil {
			return e
		}
		content = llm.AppendJSONString(nil, b.String())
	default:
		return bad("system", "Input should be a valid string or a list of text blocks")
	}
	c.Messages = append([]llm.Message{{Role: llm.RoleSystem, Content: content}}, c.Messages...)
	return nil
}

// textBlock reads a block and returns its text if it is a text block.
func textBlock(s *jsonscan.Scanner) (text string, ok bool, err error) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return "", false, nil
	}
	typ := ""
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			if s.Peek() == jsonscan.String {
				typ = s.Str()
			}
		case "text":
			if s.Peek() == jsonscan.String {
				text = s.Str()
			}
		}
		return true
	})
	return text, typ == "text", s.Err()
}

// decodeMessages turns Anthropic's alternating user/assistant messages
// into canonical ones. A user message's tool_result blocks become tool
// messages, placed first, as OpenAI requires them right after the
// assistant's calls; its other blocks stay a user message.
func decodeMessages(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Array {
		return bad("messages", "Input should be a valid list")
	}
	toolUses := map[string]bool{}
	var e *llm.Error
	count := 0
	s.Array(func(n int) bool {
		count++
		path := func() string { return "messages." + strconv.Itoa(n) }
		if s.Peek() != jsonscan.Object {
			e = bad(path(), "Input should be a valid dictionary")
			return false
		}
		// The role decides how content is read. It usually comes first;
		// when it comes after, content's bytes are kept and read once the
		// role is known.
		var role string
		var deferred []byte
		done := false
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "role":
				if s.Peek() == jsonscan.String {
					role = s.Str()
				}
				if role != "user" && role != "assistant" {
					e = bad(path()+".role", "Input should be 'user' or 'assistant'")
				}
			case "content":
				if role == "" {
					deferred = s.Raw()
					return true
				}
				done = true
				e = decodeContent(s, c, role, path, toolUses)
			}
			return e == nil
		})
		if e != nil {
			return false
		}
		if role == "" {
			e = bad(path()+".role", "Input should be 'user' or 'assistant'")
			return false
		}
		if !done {
			if deferred == nil {
				e = missing(path() + ".content")
				return false
			}
			e = decodeContent(jsonscan.New(deferred), c, role, path, toolUses)
		}
		return e == nil
	})
	if e != nil {
		return e
	}
	if count == 0 {
		return bad("messages", "at least one message is required")
	}
	for _, m := range c.Messages {
		if m.Role != llm.RoleSystem {
			return nil
		}
	}
	return bad("messages", "the messages hold no content to send")
}

// block is one content block's fields.
type block struct {
	typ, id, name, toolUseID     string
	text, input, source, content []byte // raw JSON values
	isError                      bool
}

func readBlock(s *jsonscan.Scanner) (block, bool) {
	var b block
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return b, false
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "type":
			if s.Peek() == jsonscan.String {
				b.typ = s.Str()
			}
		case "text":
			if s.Peek() == jsonscan.String {
				b.text = s.Raw() // kept escaped: a lone text block is used as it is
			}
		case "id":
			if s.Peek() == jsonscan.String {
				b.id = s.Str()
			}
		case "name":
			if s.Peek() == jsonscan.String {
				b.name = s.Str()
			}
		case "tool_use_id":
			if s.Peek() == jsonscan.String {
				b.toolUseID = s.Str()
			}
		case "input":
			b.input = s.Raw()
		case "source":
			b.source = s.Raw()
		case "content":
			b.content = s.Raw()
		case "is_error":
			if s.Peek() == jsonscan.Bool {
				b.isError = s.Bool()
			}
		}
		return true
	})
	return b, s.Err() == nil
}

// decodeContent reads a message's content: a string, or a list of blocks.
func decodeContent(s *jsonscan.Scanner, c *llm.ChatRequest, role string, path func() string, toolUses map[string]bool) *llm.Error {
	switch s.Peek() {
	case jsonscan.String:
		c.Messages = append(c.Messages, llm.Message{Role: role, Content: s.Raw()})
		return nil
	case jsonscan.Array:
		return decodeBlocks(s, c, role, path, toolUses)
	case jsonscan.Null:
		return missing(path() + ".content")
	}
	return bad(path()+".content", "Input should be a valid string or a list of content blocks")
}

func decodeBlocks(s *jsonscan.Scanner, c *llm.ChatRequest, role string, msgPath func() string, toolUses map[string]bool) *llm.Error {
	var parts []llm.ContentPart
	var texts [][]byte // raw JSON of each text part, in order
	var calls []llm.ToolCall
	var e *llm.Error
	count := 0
	s.Array(func(n int) bool {
		count++
		bpath := func() string { return msgPath() + ".content." + strconv.Itoa(n) }
		b, ok := readBlock(s)
		if !ok {
			e = bad(bpath(), "Input should be a valid dictionary")
			return false
		}
		switch b.typ {
		case "text":
			parts = append(parts, llm.ContentPart{Type: "text"})
			texts = append(texts, b.text)
		case "image":
			if role != "user" {
				e = bad(bpath()+".type", "image blocks are only allowed in user messages")
				return false
			}
			e = imagePart(b.source, bpath, &parts)
		case "tool_use":
			if role != "assistant" {
				e = bad(bpath()+".type", "tool_use blocks are only allowed in assistant messages")
				return false
			}
			if b.id == "" || b.name == "" {
				e = bad(bpath(), "a tool_use block needs id and name")
				return false
			}
			args := "{}"
			if len(b.input) > 0 && b.input[0] == '{' {
				args = compact(b.input)
			}
			toolUses[b.id] = true
			calls = append(calls, llm.ToolCall{ID: b.id, Type: "function", Function: llm.FunctionCall{Name: b.name, Arguments: args}})
		case "tool_result":
			if role != "user" {
				e = bad(bpath()+".type", "tool_result blocks are only allowed in user messages")
				return false
			}
			if !toolUses[b.toolUseID] {
				e = bad(bpath()+".tool_use_id", "tool_result refers to tool_use %q, which no earlier assistant message contains", b.toolUseID)
				return false
			}
			text, ok := resultText(b.content)
			if !ok {
				e = bad(bpath()+".content", "tool_result content must be a string or a list of text blocks")
				return false
			}
			if b.isError {
				text = "Error: " + text
			}
			c.Messages = append(c.Messages, llm.Message{Role: llm.RoleTool, ToolCallID: b.toolUseID, Content: llm.AppendJSONString(nil, text)})
		case "thinking", "redacted_thinking":
			// Reasoning from an earlier turn: no other format takes it
			// back, and the answer does not depend on it.
		default:
			e = bad(bpath()+".type", "unknown content block type %q (known: text, image, tool_use, tool_result)", b.typ)
			return false
		}
		return e == nil
	})
	if e != nil {
		return e
	}
	if count == 0 {
		return bad(msgPath()+".content", "List should have at least 1 item")
	}
	if len(parts) == 0 && len(calls) == 0 {
		return nil // a user message of tool results only
	}
	m := llm.Message{Role: role, ToolCalls: calls}
	if !(len(parts) == 1 && len(texts) == 1 && texts[0] != nil) {
		ti := 0
		for i := range parts {
			if parts[i].Type == "text" {
				if raw := texts[ti]; raw != nil {
					var ts jsonscan.Scanner
					ts.Reset(raw)
					parts[i].Text = ts.Str()
				}
				ti++
			}
		}
	}
	switch {
	case len(parts) == 0:
		m.Content = json.RawMessage("null")
	case len(parts) == 1 && parts[0].Type == "text" && texts[0] != nil:
		m.Content = texts[0] // already a JSON string: used as it is
	case role == "assistant" || (len(parts) == 1 && parts[0].Type == "text"):
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p.Text)
		}
		m.Content = llm.AppendJSONString(nil, b.String())
	default:
		m.Content = llm.PartsContent(parts)
	}
	c.Messages = append(c.Messages, m)
	return nil
}

func imagePart(source []byte, bpath func() string, parts *[]llm.ContentPart) *llm.Error {
	var typ, mediaType, data, url string
	s := jsonscan.New(source)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			if s.Peek() != jsonscan.String {
				return true
			}
			switch string(k) {
			case "type":
				typ = s.Str()
			case "media_type":
				mediaType = s.Str()
			case "data":
				data = s.Str()
			case "url":
				url = s.Str()
			}
			return true
		})
	}
	switch typ {
	case "base64":
		if mediaType == "" || data == "" {
			return bad(bpath()+".source", "a base64 image source needs media_type and data")
		}
		*parts = append(*parts, llm.ContentPart{Type: "image_url", ImageURL: &llm.ImageURL{URL: "data:" + mediaType + ";base64," + data}})
	case "url":
		if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
			return bad(bpath()+".source.url", "an image URL must be http(s)")
		}
		*parts = append(*parts, llm.ContentPart{Type: "image_url", ImageURL: &llm.ImageURL{URL: url}})
	default:
		return bad(bpath()+".source.type", "unknown image source type %q (known: base64, url)", typ)
	}
	return nil
}

// resultText flattens a tool_result's content to text.
func resultText(raw []byte) (string, bool) {
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return "", true
	}
	s := jsonscan.New(raw)
	switch s.Peek() {
	case jsonscan.String:
		return s.Str(), true
	case jsonscan.Array:
		var b strings.Builder
		ok := true
		s.Array(func(int) bool {
			text, isText, _ := textBlock(s)
			if !isText {
				ok = false
				return false
			}
			b.WriteString(text)
			return true
		})
		return b.String(), ok
	}
	return "", false
}

func compact(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func decodeTools(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Array {
		return bad("tools", "Input should be a valid list")
	}
	var e *llm.Error
	s.Array(func(i int) bool {
		var name, desc string
		var schema []byte
		if s.Peek() != jsonscan.Object {
			e = bad("tools."+strconv.Itoa(i), "Input should be a valid dictionary")
			return false
		}
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "name":
				if s.Peek() == jsonscan.String {
					name = s.Str()
				}
			case "description":
				if s.Peek() == jsonscan.String {
					desc = s.Str()
				}
			case "input_schema":
				schema = s.Raw()
			}
			return true
		})
		if name == "" {
			e = missing("tools." + strconv.Itoa(i) + ".name")
			return false
		}
		params := json.RawMessage(`{"type":"object"}`)
		if len(schema) > 0 && schema[0] == '{' {
			params = schema
		}
		c.Tools = append(c.Tools, llm.Tool{Type: "function", Function: &llm.FunctionDef{Name: name, Description: desc, Parameters: params}})
		return true
	})
	return e
}

func decodeToolChoice(s *jsonscan.Scanner, c *llm.ChatRequest) *llm.Error {
	if s.Peek() != jsonscan.Object {
		return bad("tool_choice", "Input should be a valid dictionary")
	}
	var typ, name string
	s.Object(func(k []byte) bool {
		if s.Peek() == jsonscan.String {
			switch string(k) {
			case "type":
				typ = s.Str()
			case "name":
				name = s.Str()
			}
		}
		return true
	})
	switch typ {
	case "auto":
		c.SetToolChoice(llm.ToolChoiceAuto, "")
	case "any":
		c.SetToolChoice(llm.ToolChoiceRequired, "")
	case "none":
		c.SetToolChoice(llm.ToolChoiceNone, "")
	case "tool":
		if name == "" {
			return missing("tool_choice.name")
		}
		c.SetToolChoice(llm.ToolChoiceFunction, name)
	default:
		return bad("tool_choice.type", "unknown tool_choice type %q (known: auto, any, tool, none)", typ)
	}
	return nil
}
