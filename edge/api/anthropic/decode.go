package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unsafe"

	"github.com/meridian-mesh/meridian/shared/llm"
	"github.com/tidwall/gjson"
)

// Requests are read with gjson in one pass over each level, not decoded
// with encoding/json: translation sits on the path of every request
// (BenchmarkTranslateRequest). The body is parsed in place: strings and raw
// values of the canonical request point into it, so the body must not be
// changed afterwards; nothing in the request path does.

// view returns s's bytes without copying. s comes from the request body,
// which nothing changes once it is read.
func view(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func bad(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, "%s: "+format, append([]any{param}, args...)...)
}

func missing(param string) *llm.Error { return bad(param, "Field required") }

func present(v gjson.Result) bool { return v.Exists() && v.Type != gjson.Null }

func isBool(v gjson.Result) bool { return v.Type == gjson.True || v.Type == gjson.False }

// DecodeMessages translates a Messages API body into a canonical request.
// Errors name the field the way Anthropic does, e.g.
// "messages.1.content.0.type".
func DecodeMessages(body []byte) (*llm.Request, *llm.Error) {
	if !gjson.ValidBytes(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body is not valid JSON: %v", err)
	}
	top := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if !top.IsObject() {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body must be a JSON object.")
	}
	var f struct {
		model, maxTokens, messages, system, stream, stop, temperature, topP, topK, metadata, tools, toolChoice gjson.Result
	}
	top.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			f.model = v
		case "max_tokens":
			f.maxTokens = v
		case "messages":
			f.messages = v
		case "system":
			f.system = v
		case "stream":
			f.stream = v
		case "stop_sequences":
			f.stop = v
		case "temperature":
			f.temperature = v
		case "top_p":
			f.topP = v
		case "top_k":
			f.topK = v
		case "metadata":
			f.metadata = v
		case "tools":
			f.tools = v
		case "tool_choice":
			f.toolChoice = v
		}
		return true
	})

	c := &llm.ChatRequest{}
	switch {
	case !present(f.model):
		return nil, missing("model")
	case f.model.Type != gjson.String || f.model.Str == "" || len(f.model.Str) > 256:
		return nil, bad("model", "Input should be a non-empty string")
	}
	c.Model = f.model.Str
	switch {
	case !present(f.maxTokens):
		return nil, missing("max_tokens")
	case f.maxTokens.Type != gjson.Number || f.maxTokens.Num != float64(int64(f.maxTokens.Num)) || f.maxTokens.Num < 1:
		return nil, bad("max_tokens", "Input should be a positive integer")
	}
	maxTokens := int(f.maxTokens.Int())
	c.MaxTokens = &maxTokens
	if present(f.stream) {
		if !isBool(f.stream) {
			return nil, bad("stream", "Input should be a valid boolean")
		}
		c.Stream = f.stream.Type == gjson.True
	}
	for _, num := range []struct {
		name string
		v    gjson.Result
		dst  **float64
	}{{"temperature", f.temperature, &c.Temperature}, {"top_p", f.topP, &c.TopP}} {
		if present(num.v) {
			if num.v.Type != gjson.Number {
				return nil, bad(num.name, "Input should be a valid number")
			}
			x := num.v.Num
			*num.dst = &x
		}
	}
	if present(f.topK) {
		if f.topK.Type != gjson.Number || f.topK.Num != float64(int64(f.topK.Num)) {
			return nil, bad("top_k", "Input should be a valid integer")
		}
		k := int(f.topK.Int())
		c.TopK = &k
	}
	if present(f.stop) {
		if !f.stop.IsArray() {
			return nil, bad("stop_sequences", "Input should be a valid list")
		}
		var stops []string
		var e *llm.Error
		f.stop.ForEach(func(_, s gjson.Result) bool {
			if s.Type != gjson.String {
				e = bad("stop_sequences."+strconv.Itoa(len(stops)), "Input should be a valid string")
				return false
			}
			stops = append(stops, s.Str)
			return true
		})
		if e != nil {
			return nil, e
		}
		c.Stop, _ = json.Marshal(stops)
	}
	if present(f.metadata) {
		if !f.metadata.IsObject() {
			return nil, bad("metadata", "Input should be a valid dictionary")
		}
		c.User = f.metadata.Get("user_id").Str
	}
	if e := decodeSystem(c, f.system); e != nil {
		return nil, e
	}
	if e := decodeMessages(c, f.messages); e != nil {
		return nil, e
	}
	if e := decodeTools(c, f.tools, f.toolChoice); e != nil {
		return nil, e
	}
	return &llm.Request{Op: llm.OpChat, Model: c.Model, Stream: c.Stream, IncludeUsage: true, Chat: c}, nil
}

func decodeSystem(c *llm.ChatRequest, v gjson.Result) *llm.Error {
	if !present(v) {
		return nil
	}
	var text string
	switch {
	case v.Type == gjson.String:
		text = v.Str
	case v.IsArray():
		var b strings.Builder
		var e *llm.Error
		i := 0
		v.ForEach(func(_, blk gjson.Result) bool {
			if blk.Get("type").Str != "text" {
				e = bad(fmt.Sprintf("system.%d.type", i), "system blocks must be text blocks")
				return false
			}
			if i > 0 {
				b.WriteString("\n\n")
			}
			b.WriteString(blk.Get("text").Str)
			i++
			return true
		})
		if e != nil {
			return e
		}
		text = b.String()
	default:
		return bad("system", "Input should be a valid string or a list of text blocks")
	}
	c.Messages = append(c.Messages, llm.Message{Role: llm.RoleSystem, Content: jsonString(text)})
	return nil
}

func jsonString(s string) json.RawMessage { return llm.AppendJSONString(nil, s) }

// decodeMessages turns Anthropic's alternating user/assistant messages
// into canonical ones. A user message's tool_result blocks become tool
// messages, placed first, as OpenAI requires them right after the
// assistant's calls; its other blocks stay a user message.
func decodeMessages(c *llm.ChatRequest, v gjson.Result) *llm.Error {
	if !present(v) {
		return missing("messages")
	}
	if !v.IsArray() {
		return bad("messages", "Input should be a valid list")
	}
	toolUses := map[string]bool{}
	var e *llm.Error
	i := 0
	v.ForEach(func(_, m gjson.Result) bool {
		n := i
		path := func() string { return "messages." + strconv.Itoa(n) }
		i++
		if !m.IsObject() {
			e = bad(path(), "Input should be a valid dictionary")
			return false
		}
		var role, content gjson.Result
		m.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "role":
				role = v
			case "content":
				content = v
			}
			return true
		})
		if role.Str != "user" && role.Str != "assistant" {
			e = bad(path()+".role", "Input should be 'user' or 'assistant'")
			return false
		}
		switch {
		case !present(content):
			e = missing(path() + ".content")
		case content.Type == gjson.String:
			c.Messages = append(c.Messages, llm.Message{Role: role.Str, Content: view(content.Raw)})
		case content.IsArray() && len(content.Raw) > 0 && strings.TrimSpace(content.Raw[1:len(content.Raw)-1]) == "":
			e = bad(path()+".content", "List should have at least 1 item")
		case content.IsArray():
			e = decodeBlocks(c, role.Str, content, path, toolUses)
		default:
			e = bad(path()+".content", "Input should be a valid string or a list of content blocks")
		}
		return e == nil
	})
	if e != nil {
		return e
	}
	if i == 0 {
		return bad("messages", "at least one message is required")
	}
	for _, m := range c.Messages {
		if m.Role != llm.RoleSystem {
			return nil
		}
	}
	return bad("messages", "the messages hold no content to send")
}

func decodeBlocks(c *llm.ChatRequest, role string, blocks gjson.Result, msgPath func() string, toolUses map[string]bool) *llm.Error {
	var parts []llm.ContentPart
	var calls []llm.ToolCall
	var e *llm.Error
	j := 0
	var lastText string // the raw JSON string of a lone text block
	blocks.ForEach(func(_, b gjson.Result) bool {
		n := j
		j++
		bpathOnce := ""
		bpath := func() string {
			if bpathOnce == "" {
				bpathOnce = msgPath() + ".content." + strconv.Itoa(n)
			}
			return bpathOnce
		}
		var typ, text gjson.Result
		b.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "type":
				typ = v
			case "text":
				text = v
			}
			return true
		})
		switch typ.Str {
		case "text":
			parts = append(parts, llm.ContentPart{Type: "text", Text: text.Str})
			lastText = text.Raw
		case "image":
			if role != "user" {
				e = bad(bpath()+".type", "image blocks are only allowed in user messages")
				return false
			}
			src := b.Get("source")
			switch src.Get("type").Str {
			case "base64":
				mt, data := src.Get("media_type").Str, src.Get("data").Str
				if mt == "" || data == "" {
					e = bad(bpath()+".source", "a base64 image source needs media_type and data")
					return false
				}
				parts = append(parts, llm.ContentPart{Type: "image_url", ImageURL: &llm.ImageURL{URL: "data:" + mt + ";base64," + data}})
			case "url":
				u := src.Get("url").Str
				if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
					e = bad(bpath()+".source.url", "an image URL must be http(s)")
					return false
				}
				parts = append(parts, llm.ContentPart{Type: "image_url", ImageURL: &llm.ImageURL{URL: u}})
			default:
				e = bad(bpath()+".source.type", "unknown image source type %q (known: base64, url)", src.Get("type").Str)
				return false
			}
		case "tool_use":
			if role != "assistant" {
				e = bad(bpath()+".type", "tool_use blocks are only allowed in assistant messages")
				return false
			}
			id, name, input := b.Get("id").Str, b.Get("name").Str, b.Get("input")
			if id == "" || name == "" {
				e = bad(bpath(), "a tool_use block needs id and name")
				return false
			}
			args := "{}"
			if input.IsObject() {
				args = compact(input.Raw)
			}
			toolUses[id] = true
			calls = append(calls, llm.ToolCall{ID: id, Type: "function", Function: llm.FunctionCall{Name: name, Arguments: args}})
		case "tool_result":
			if role != "user" {
				e = bad(bpath()+".type", "tool_result blocks are only allowed in user messages")
				return false
			}
			id := b.Get("tool_use_id").Str
			if !toolUses[id] {
				e = bad(bpath()+".tool_use_id", "tool_result refers to tool_use %q, which no earlier assistant message contains", id)
				return false
			}
			text, ok := resultText(b.Get("content"))
			if !ok {
				e = bad(bpath()+".content", "tool_result content must be a string or a list of text blocks")
				return false
			}
			if b.Get("is_error").Type == gjson.True {
				text = "Error: " + text
			}
			c.Messages = append(c.Messages, llm.Message{Role: llm.RoleTool, ToolCallID: id, Content: jsonString(text)})
		case "thinking", "redacted_thinking":
			// Reasoning from an earlier turn: no other format takes it
			// back, and the answer does not depend on it.
		default:
			e = bad(bpath()+".type", "unknown content block type %q (known: text, image, tool_use, tool_result)", typ.Str)
			return false
		}
		return true
	})
	if e != nil {
		return e
	}
	if len(parts) == 0 && len(calls) == 0 {
		return nil // a user message of tool results only
	}
	m := llm.Message{Role: role, ToolCalls: calls}
	switch {
	case len(parts) == 0:
		m.Content = json.RawMessage("null")
	case len(parts) == 1 && parts[0].Type == "text" && lastText != "":
		m.Content = view(lastText) // already a JSON string: no need to encode it again
	case role == "assistant" || (len(parts) == 1 && parts[0].Type == "text"):
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p.Text)
		}
		m.Content = jsonString(b.String())
	default:
		m.Content = llm.PartsContent(parts)
	}
	c.Messages = append(c.Messages, m)
	return nil
}

// resultText flattens a tool_result's content to text.
func resultText(v gjson.Result) (string, bool) {
	if !present(v) {
		return "", true
	}
	if v.Type == gjson.String {
		return v.Str, true
	}
	if !v.IsArray() {
		return "", false
	}
	var b strings.Builder
	ok := true
	v.ForEach(func(_, blk gjson.Result) bool {
		if blk.Get("type").Str != "text" {
			ok = false
			return false
		}
		b.WriteString(blk.Get("text").Str)
		return true
	})
	return b.String(), ok
}

func compact(raw string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(raw)); err != nil {
		return raw
	}
	return b.String()
}

func decodeTools(c *llm.ChatRequest, tools, choice gjson.Result) *llm.Error {
	if present(tools) {
		if !tools.IsArray() {
			return bad("tools", "Input should be a valid list")
		}
		var e *llm.Error
		i := 0
		tools.ForEach(func(_, t gjson.Result) bool {
			path := "tools." + strconv.Itoa(i)
			i++
			name := t.Get("name").Str
			if name == "" {
				e = missing(path + ".name")
				return false
			}
			schema := t.Get("input_schema")
			params := json.RawMessage(`{"type":"object"}`)
			if schema.IsObject() {
				params = view(schema.Raw)
			}
			c.Tools = append(c.Tools, llm.Tool{Type: "function", Function: &llm.FunctionDef{
				Name: name, Description: t.Get("description").Str, Parameters: params,
			}})
			return true
		})
		if e != nil {
			return e
		}
	}
	if present(choice) {
		switch typ := choice.Get("type").Str; typ {
		case "auto":
			c.SetToolChoice(llm.ToolChoiceAuto, "")
		case "any":
			c.SetToolChoice(llm.ToolChoiceRequired, "")
		case "none":
			c.SetToolChoice(llm.ToolChoiceNone, "")
		case "tool":
			name := choice.Get("name").Str
			if name == "" {
				return missing("tool_choice.name")
			}
			c.SetToolChoice(llm.ToolChoiceFunction, name)
		default:
			return bad("tool_choice.type", "unknown tool_choice type %q (known: auto, any, tool, none)", typ)
		}
	}
	return nil
}
