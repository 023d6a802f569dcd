package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Endpoints are the URLs a batch line may call: the OpenAI surface's
// non-streaming POST endpoints.
var Endpoints = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}

// MaxCustomID bounds a line's custom_id, bytes.
const MaxCustomID = 512

// Line is one request of a batch input file.
type Line struct {
	// Index is the line's place in the file, from 0 (blank lines are
	// not counted).
	Index    int
	CustomID string
	Method   string
	URL      string
	// Model is body.model.
	Model string
	// Body is the request body, as the file has it.
	Body json.RawMessage
}

// LineError is a line the parser refused, numbered from 1 as editors
// number lines.
type LineError struct {
	Line    int
	Param   string
	Message string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Message) }

type rawLine struct {
	CustomID *string         `json:"custom_id"`
	Method   *string         `json:"method"`
	URL      *string         `json:"url"`
	Body     json.RawMessage `json:"body"`
}

type rawBody struct {
	Model  *string          `json:"model"`
	Stream *json.RawMessage `json:"stream"`
}

// ParseLine checks one JSONL line (n is its 1-based line number) and
// returns the request it holds: a JSON object with a non-empty string
// custom_id, method "POST", url one of Endpoints and an object body
// naming a model and not asking for a stream.
func ParseLine(n int, b []byte) (Line, *LineError) {
	bad := func(param, format string, args ...any) (Line, *LineError) {
		return Line{}, &LineError{Line: n, Param: param, Message: fmt.Sprintf(format, args...)}
	}
	if !utf8.Valid(b) {
		return bad("", "the line is not valid UTF-8")
	}
	var r rawLine
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return bad("", "the line is not a JSON object: %v", err)
	}
	if dec.More() {
		return bad("", "the line holds more than one JSON value")
	}
	switch {
	case r.CustomID == nil || *r.CustomID == "":
		return bad("custom_id", "custom_id is required and must be a non-empty string")
	case len(*r.CustomID) > MaxCustomID:
		return bad("custom_id", "custom_id is longer than %d bytes", MaxCustomID)
	case r.Method == nil || *r.Method != "POST":
		return bad("method", `method must be "POST"`)
	case r.URL == nil || !knownEndpoint(*r.URL):
		return bad("url", "url must be one of %v", Endpoints)
	}
	body := bytes.TrimSpace(r.Body)
	if len(body) == 0 || body[0] != '{' {
		return bad("body", "body must be a JSON object")
	}
	var rb rawBody
	if err := json.Unmarshal(body, &rb); err != nil {
		return bad("body", "body is not a valid request: %v", err)
	}
	if rb.Model == nil || *rb.Model == "" {
		return bad("body.model", "body.model is required and must be a non-empty string")
	}
	if rb.Stream != nil && string(bytes.TrimSpace(*rb.Stream)) != "false" && string(bytes.TrimSpace(*rb.Stream)) != "null" {
		return bad("body.stream", "batch requests cannot stream: remove body.stream or set it to false")
	}
	return Line{CustomID: *r.CustomID, Method: *r.Method, URL: *r.URL, Model: *rb.Model, Body: json.RawMessage(body)}, nil
}

func knownEndpoint(u string) bool {
	for _, e := range Endpoints {
		if u == e {
			return true
		}
	}
	return false
}

// ParseFile checks a whole JSONL file: every non-blank line must parse,
// custom_ids must be unique, and there must be between 1 and maxLines
// lines. It stops at the first bad line.
func ParseFile(b []byte, maxLines int) ([]Line, *LineError) {
	var lines []Line
	seen := map[string]int{}
	for n := 1; len(b) > 0; n++ {
		raw := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			raw, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			continue
		}
		if len(lines) >= maxLines {
			return nil, &LineError{Line: n, Param: "file", Message: fmt.Sprintf("the file holds more than %d requests", maxLines)}
		}
		l, err := ParseLine(n, raw)
		if err != nil {
			return nil, err
		}
		if first, dup := seen[l.CustomID]; dup {
			return nil, &LineError{Line: n, Param: "custom_id", Message: fmt.Sprintf("custom_id %q is used on line %d already; each request needs its own", l.CustomID, first)}
		}
		seen[l.CustomID] = n
		l.Index = len(lines)
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return nil, &LineError{Line: 1, Param: "file", Message: "the file holds no requests"}
	}
	return lines, nil
}
