package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Requests are read in one pass with jsonscan, the edge's one JSON
// reader (its package comment gives the measurements behind it), never
// with encoding/json, which is kept for the error path's byte offset. A chat body is decoded once into the canonical request
// (DecodeChat); completions and embeddings bodies are forwarded as they
// came, so for them the pass only checks the shape and reads a few
// fields.

// Limits on fields, checked before anything is sent upstream.
const (
	maxMessages = llm.MaxMessages
	maxN        = 128
	maxModelLen = 256
)

var validRoles = map[string]bool{
	"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true,
}

func bad(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

func missing(param string) *llm.Error {
	return bad(param, "Missing required parameter: '%s'.", param)
}

func wrongType(param, want string) *llm.Error {
	return bad(param, "Invalid type for '%s': expected %s.", param, want)
}

// syntaxError reports where a body stops being JSON. It runs only for
// bodies jsonscan already found invalid, to recover encoding/json's offset.
func syntaxError(body []byte) *llm.Error {
	var v any
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return bad("", "We could not parse the JSON body of your request: %v at byte %d.", se, se.Offset)
	}
	return bad("", "We could not parse the JSON body of your request.")
}

// precheck refuses what the one-pass readers would accept or spend too
// long on: nesting past jsonscan.MaxDepth, counted first so a hostile
// body is refused after reading only that far, and invalid UTF-8, which
// OpenAI's API refuses.
func precheck(body []byte) *llm.Error {
	if at, deep := jsonscan.TooDeep(body, jsonscan.MaxDepth); deep {
		return bad("", "We could not parse the JSON body of your request: it is nested deeper than %d levels (at byte %d).", jsonscan.MaxDepth, at)
	}
	if at := api.InvalidUTF8(body); at >= 0 {
		return bad("", "We could not parse the JSON body of your request: it is not valid UTF-8 (invalid byte at offset %d).", at)
	}
	return nil
}

// value is one top-level field of a completions or embeddings body, as
// the one pass read it.
type value struct {
	kind  jsonscan.Kind // Invalid: absent
	str   string        // a string's text
	n     int64         // an integer's value, when isInt
	isInt bool
	b     bool // a boolean's value
	items int  // an array's length
	// an object's include_usage (stream_options)
	iuKind jsonscan.Kind
	iu     bool
}

// object reads body, a JSON object, in one pass (jsonscan) and returns
// the fields want names, the last one winning for a repeated key as in
// encoding/json.
func object(body []byte, want ...string) (map[string]value, *llm.Error) {
	if e := precheck(body); e != nil {
		return nil, e
	}
	s := jsonscan.New(body)
	if s.Peek() != jsonscan.Object {
		if s.Skip(); s.End() != nil {
			return nil, syntaxError(body)
		}
		return nil, bad("", "The request body must be a JSON object.")
	}
	f := make(map[string]value, len(want))
	s.Object(func(k []byte) bool {
		for _, w := range want {
			if string(k) == w {
				f[w] = readValue(s)
				break
			}
		}
		return s.Err() == nil
	})
	if s.End() != nil {
		return nil, syntaxError(body)
	}
	return f, nil
}

func readValue(s *jsonscan.Scanner) value {
	v := value{kind: s.Peek()}
	switch v.kind {
	case jsonscan.String:
		v.str = s.Str()
	case jsonscan.Number:
		v.n, v.isInt = s.Int()
	case jsonscan.Bool:
		v.b = s.Bool()
	case jsonscan.Array:
		s.Array(func(int) bool {
			v.items++
			s.Skip()
			return s.Err() == nil
		})
	case jsonscan.Object:
		s.Object(func(k []byte) bool {
			if string(k) == "include_usage" {
				if v.iuKind = s.Peek(); v.iuKind == jsonscan.Bool {
					v.iu = s.Bool()
				}
			}
			return true
		})
	default:
		s.Skip()
	}
	return v
}

func present(v value) bool { return v.kind != jsonscan.Invalid && v.kind != jsonscan.Null }

func checkModel(f map[string]value) (string, *llm.Error) {
	v := f["model"]
	if !present(v) {
		return "", missing("model")
	}
	if v.kind != jsonscan.String {
		return "", wrongType("model", "a string")
	}
	if v.str == "" {
		return "", missing("model")
	}
	if len(v.str) > maxModelLen {
		return "", bad("model", "'model' is longer than %d characters.", maxModelLen)
	}
	return v.str, nil
}

// checkStream reads stream and stream_options.
func checkStream(f map[string]value) (stream, includeUsage bool, e *llm.Error) {
	if v := f["stream"]; present(v) {
		if v.kind != jsonscan.Bool {
			return false, false, wrongType("stream", "a boolean")
		}
		stream = v.b
	}
	if v := f["stream_options"]; present(v) {
		if v.kind != jsonscan.Object {
			return false, false, wrongType("stream_options", "an object")
		}
		if !stream {
			return false, false, bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		if v.iuKind != jsonscan.Invalid && v.iuKind != jsonscan.Null {
			if v.iuKind != jsonscan.Bool {
				return false, false, wrongType("stream_options.include_usage", "a boolean")
			}
			includeUsage = v.iu
		}
	}
	return stream, includeUsage, nil
}

// checkN: an integer (written as one: 2.0 is refused, as for chat) in
// [1, maxN].
func checkN(f map[string]value) *llm.Error {
	v := f["n"]
	if !present(v) {
		return nil
	}
	if v.kind != jsonscan.Number || !v.isInt {
		return wrongType("n", "an integer")
	}
	if v.n < 1 || v.n > maxN {
		return bad("n", "'n' must be between 1 and %d.", maxN)
	}
	return nil
}

// DecodeChat decodes a chat completions body into the canonical request
// in one pass: llm.DecodeChatRequest reads it into Request.Chat, and the
// checks below look only at those types, so the body is never read
// again (not by the checks, not by an adapter that translates it, not by
// the cache key). The request keeps body as it came, so an
// OpenAI-compatible upstream receives it unchanged.
//
// One parser means one set of rules for every route a request may take:
// a repeated key takes its last value, as in encoding/json; a number
// given for an integer field (n, max_tokens, seed, ...) must be written
// as an integer within int64 (2.0 and 1e3 are refused); invalid UTF-8
// and nesting past 512 levels are refused before the pass.
func DecodeChat(body []byte) (*llm.Request, *llm.Error) {
	if e := precheck(body); e != nil {
		return nil, e
	}
	c, err := llm.DecodeChatRequest(body)
	if err != nil {
		var e *llm.Error
		if !errors.As(err, &e) || e.Cause != nil {
			return nil, syntaxError(body)
		}
		return nil, e
	}
	if c.Model == "" {
		return nil, missing("model")
	}
	if len(c.Model) > maxModelLen {
		return nil, bad("model", "'model' is longer than %d characters.", maxModelLen)
	}
	switch {
	case c.Messages == nil:
		return nil, missing("messages")
	case len(c.Messages) == 0:
		return nil, bad("messages", "'messages' must contain at least one message.")
	case len(c.Messages) > maxMessages:
		return nil, bad("messages", "'messages' holds more than %d messages.", maxMessages)
	}
	for i := range c.Messages {
		if e := checkMessage(&c.Messages[i], i); e != nil {
			return nil, e
		}
	}
	includeUsage := false
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		includeUsage = c.StreamOptions.IncludeUsage
	}
	if c.N != nil && (*c.N < 1 || *c.N > maxN) {
		return nil, bad("n", "'n' must be between 1 and %d.", maxN)
	}
	for i := range c.Tools {
		if c.Tools[i].Type == "" {
			return nil, missing(fmt.Sprintf("tools[%d].type", i))
		}
	}
	return &llm.Request{Op: llm.OpChat, Model: c.Model, Stream: c.Stream, IncludeUsage: includeUsage, Body: body, Chat: c}, nil
}

func checkMessage(m *llm.Message, i int) *llm.Error {
	param := func(field string) string { return fmt.Sprintf("messages[%d]%s", i, field) }
	if m.Role == "" {
		return missing(param(".role"))
	}
	if !validRoles[m.Role] {
		return bad(param(".role"), "Invalid value for '%s': %s is not one of system, developer, user, assistant, tool.", param(".role"), llm.AppendJSONString(nil, m.Role))
	}
	if c := m.Content; len(c) > 0 && c[0] != '"' && c[0] != '[' && string(c) != "null" {
		return wrongType(param(".content"), "a string or an array of content parts")
	}
	if m.Role == "tool" && m.ToolCallID == "" {
		return missing(param(".tool_call_id"))
	}
	return nil
}

// DecodeCompletion checks a legacy completions body.
func DecodeCompletion(body []byte) (*llm.Request, *llm.Error) {
	f, e := object(body, "model", "prompt", "stream", "stream_options", "n")
	if e != nil {
		return nil, e
	}
	model, e := checkModel(f)
	if e != nil {
		return nil, e
	}
	if p := f["prompt"]; !present(p) {
		return nil, missing("prompt")
	} else if p.kind != jsonscan.String && p.kind != jsonscan.Array {
		return nil, wrongType("prompt", "a string or an array")
	}
	stream, includeUsage, e := checkStream(f)
	if e != nil {
		return nil, e
	}
	if e := checkN(f); e != nil {
		return nil, e
	}
	return &llm.Request{Op: llm.OpCompletion, Model: model, Stream: stream, IncludeUsage: includeUsage, Body: body}, nil
}

// DecodeEmbedding checks an embeddings body.
func DecodeEmbedding(body []byte) (*llm.Request, *llm.Error) {
	f, e := object(body, "model", "input")
	if e != nil {
		return nil, e
	}
	model, e := checkModel(f)
	if e != nil {
		return nil, e
	}
	in := f["input"]
	switch {
	case !present(in):
		return nil, missing("input")
	case in.kind != jsonscan.String && in.kind != jsonscan.Array:
		return nil, wrongType("input", "a string or an array")
	case in.kind == jsonscan.String && in.str == "", in.kind == jsonscan.Array && in.items == 0:
		return nil, bad("input", "'input' must not be empty.")
	}
	return &llm.Request{Op: llm.OpEmbedding, Model: model, Body: body}, nil
}
