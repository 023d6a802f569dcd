package llm

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// ContentPart is one part of a message's content array.
type ContentPart struct {
	// Type is "text" or "image_url".
	Type     string    `json:"type"`
	Text     string    `json:"text,omitempty"`
	ImageURL *ImageURL `json:"image_url,omitempty"`
}

// ImageURL is an image given by URL or as a data: URL with base64 bytes.
type ImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// TextContent returns content holding one string.
func TextContent(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// PartsContent returns content holding an array of parts.
func PartsContent(parts []ContentPart) json.RawMessage {
	b, _ := json.Marshal(parts)
	return b
}

// ErrContent reports message content that is neither a string, an array
// of parts nor null.
var ErrContent = errors.New("content must be a string, an array of content parts or null")

// Parts returns a message's content as parts: a string becomes one text
// part, null or absent content none. It reads the content in one pass
// (jsonscan), not with encoding/json: every translating adapter calls it
// for every message. Texts point into the content when they have no
// escapes. A part's fields are matched exactly by name; a field of the
// wrong type is an error.
func (m *Message) Parts() ([]ContentPart, error) {
	c := m.Content
	if len(c) == 0 || string(c) == "null" {
		return nil, nil
	}
	s := jsonscan.New(c)
	var parts []ContentPart
	switch s.Peek() {
	case jsonscan.String:
		parts = []ContentPart{{Type: "text", Text: s.Str()}}
	case jsonscan.Array:
		parts = make([]ContentPart, 0, 2)
		var err error
		s.Array(func(int) bool {
			parts = append(parts, ContentPart{})
			err = scanPart(s, &parts[len(parts)-1])
			return err == nil
		})
		if err != nil {
			return nil, err
		}
	default:
		if s.Peek() == jsonscan.Invalid {
			s.Skip()
			return nil, s.Err()
		}
		return nil, ErrContent
	}
	if err := s.End(); err != nil {
		return nil, err
	}
	return parts, nil
}

// errPart reports a content part field of the wrong type.
var errPart = errors.New("content part: a field has the wrong type")

// scanPart reads one content part; null leaves it empty.
func scanPart(s *jsonscan.Scanner, p *ContentPart) error {
	var err error
	if !fields(s, func(k []byte) bool {
		switch string(k) {
		case "type":
			p.Type, err = partStr(s)
		case "text":
			p.Text, err = partStr(s)
		case "image_url":
			u := &ImageURL{}
			if !fields(s, func(k []byte) bool {
				switch string(k) {
				case "url":
					u.URL, err = partStr(s)
				case "detail":
					u.Detail, err = partStr(s)
				}
				return err == nil
			}) {
				err = errPart
				break
			}
			p.ImageURL = u
		}
		return err == nil
	}) {
		return errPart
	}
	if err == nil {
		err = s.Err()
	}
	return err
}

func partStr(s *jsonscan.Scanner) (string, error) {
	if s.Peek() != jsonscan.String {
		return "", errPart
	}
	return s.Str(), nil
}

// Text returns the message's text: a string content, or its text parts
// joined. ok is false when the content holds anything but text.
func (m *Message) Text() (text string, ok bool) {
	parts, err := m.Parts()
	if err != nil {
		return "", false
	}
	if len(parts) == 1 && parts[0].Type == "text" {
		return parts[0].Text, true
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", false
		}
		b.WriteString(p.Text)
	}
	return b.String(), true
}

// FunctionDef is a function a model may call.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// FunctionCall is a call the model made: a name and its arguments as a
// JSON text.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ChatCompletion is a non-streamed chat answer in OpenAI's shape.
type ChatCompletion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one answer of a ChatCompletion.
type Choice struct {
	Index        int             `json:"index"`
	Message      AnswerMessage   `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// AnswerMessage is the assistant's message in a ChatCompletion.
type AnswerMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	Refusal   *string    `json:"refusal,omitempty"`
}

// Chunk is one streamed piece of a chat answer, in OpenAI's
// chat.completion.chunk model. A stream's Next returns the same *Chunk
// again and again, so a chunk is valid only until the next call, and so
// are its strings, which may point into the stream's read buffer: a
// consumer that keeps one past the call must copy it (strings.Clone).
type Chunk struct {
	ID      string
	Model   string
	Created int64
	Choices []ChunkChoice
	// Usage is set on the chunk that reports token counts.
	Usage *Usage
	// Raw is the chunk as OpenAI-format JSON, when the upstream spoke
	// OpenAI's format. The OpenAI surface writes it unchanged; the typed
	// fields are filled only when Parse is called.
	Raw []byte
	// Event is set on a chunk of a passed-through stream
	// (Response.Format): it is the server-sent event's name, and Raw the
	// event's data in the client's own format, to be written unchanged
	// and never parsed.
	Event string

	parsed bool
	usage  Usage
	scan   jsonscan.Scanner
}

// ChunkChoice is one choice's delta.
type ChunkChoice struct {
	Index int
	// Role is set on a choice's first delta.
	Role string
	// Content is a piece of text; HasContent says whether the delta
	// carried a content field at all (it may be "").
	Content    string
	HasContent bool
	ToolCalls  []ToolCallDelta
	// FinishReason is set on a choice's last delta.
	FinishReason string
}

// ToolCallDelta is a piece of a streamed tool call. The first piece of a
// call carries its ID and name; later ones add to its arguments.
type ToolCallDelta struct {
	Index     int
	ID        string
	Name      string
	Arguments string
}

// Reset empties c for reuse, keeping its slices' memory.
func (c *Chunk) Reset() {
	for i := range c.Choices {
		c.Choices[i].ToolCalls = c.Choices[i].ToolCalls[:0]
	}
	*c = Chunk{Choices: c.Choices[:0]}
}

// SetRaw makes c the OpenAI-format chunk raw, to be parsed on demand.
func (c *Chunk) SetRaw(raw []byte) {
	c.Reset()
	c.Raw = raw
}

// Parse fills the typed fields from Raw, if they are not filled yet. It
// reads the chunk in one pass (jsonscan): it runs once per streamed chunk
// when a surface translates, and must stay well under a microsecond
// (BenchmarkChunkParse). The typed fields point into Raw, which stays
// valid exactly as long as the chunk does.
func (c *Chunk) Parse() error {
	if c.parsed || c.Raw == nil {
		return nil
	}
	c.parsed = true
	s := &c.scan
	s.Reset(c.Raw)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "id":
			c.ID = optStr(s)
		case "model":
			c.Model = optStr(s)
		case "created":
			if s.Peek() == jsonscan.Number {
				c.Created, _ = s.Int()
			}
		case "usage":
			if s.Peek() == jsonscan.Object {
				c.usage = scanUsage(s)
				c.Usage = &c.usage
			}
		case "choices":
			if s.Peek() == jsonscan.Array {
				s.Array(func(int) bool {
					c.Choices = append(c.Choices, ChunkChoice{})
					scanChoice(s, &c.Choices[len(c.Choices)-1])
					return true
				})
			}
		}
		return true
	})
	if err := s.End(); err != nil {
		return err
	}
	return nil
}

// optStr reads a string, or skips any other value and returns "".
func optStr(s *jsonscan.Scanner) string {
	if s.Peek() == jsonscan.String {
		return s.Str()
	}
	s.Skip()
	return ""
}

func optInt(s *jsonscan.Scanner) int {
	if s.Peek() == jsonscan.Number {
		n, _ := s.Int()
		return int(n)
	}
	s.Skip()
	return 0
}

func scanUsage(s *jsonscan.Scanner) Usage {
	var u Usage
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "prompt_tokens":
			u.PromptTokens = optInt(s)
		case "completion_tokens":
			u.CompletionTokens = optInt(s)
		case "total_tokens":
			u.TotalTokens = optInt(s)
		}
		return true
	})
	return u
}

func scanChoice(s *jsonscan.Scanner, cc *ChunkChoice) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "index":
			cc.Index = optInt(s)
		case "finish_reason":
			cc.FinishReason = optStr(s)
		case "delta":
			if s.Peek() != jsonscan.Object {
				return true
			}
			s.Object(func(k []byte) bool {
				switch string(k) {
				case "role":
					cc.Role = optStr(s)
				case "content":
					if s.Peek() == jsonscan.String {
						cc.Content, cc.HasContent = s.Str(), true
					}
				case "tool_calls":
					if s.Peek() == jsonscan.Array {
						s.Array(func(int) bool {
							cc.ToolCalls = append(cc.ToolCalls, scanToolCall(s))
							return true
						})
					}
				}
				return true
			})
		}
		return true
	})
}

func scanToolCall(s *jsonscan.Scanner) ToolCallDelta {
	var td ToolCallDelta
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return td
	}
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "index":
			td.Index = optInt(s)
		case "id":
			td.ID = optStr(s)
		case "function":
			if s.Peek() != jsonscan.Object {
				return true
			}
			s.Object(func(k []byte) bool {
				switch string(k) {
				case "name":
					td.Name = optStr(s)
				case "arguments":
					td.Arguments = optStr(s)
				}
				return true
			})
		}
		return true
	})
	return td
}

// AppendJSON appends c in OpenAI's chat.completion.chunk format: Raw as
// it is when c has one, else the typed fields.
func (c *Chunk) AppendJSON(dst []byte) []byte {
	if c.Raw != nil {
		return append(dst, c.Raw...)
	}
	dst = append(dst, `{"id":`...)
	dst = AppendJSONString(dst, c.ID)
	dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
	dst = strconv.AppendInt(dst, c.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = AppendJSONString(dst, c.Model)
	dst = append(dst, `,"choices":[`...)
	for i := range c.Choices {
		ch := &c.Choices[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = strconv.AppendInt(dst, int64(ch.Index), 10)
		dst = append(dst, `,"delta":{`...)
		sep := false
		field := func(name string) {
			if sep {
				dst = append(dst, ',')
			}
			sep = true
			dst = append(dst, '"')
			dst = append(dst, name...)
			dst = append(dst, `":`...)
		}
		if ch.Role != "" {
			field("role")
			dst = AppendJSONString(dst, ch.Role)
		}
		if ch.HasContent {
			field("content")
			dst = AppendJSONString(dst, ch.Content)
		}
		if len(ch.ToolCalls) > 0 {
			field("tool_calls")
			dst = append(dst, '[')
			for j, tc := range ch.ToolCalls {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, `{"index":`...)
				dst = strconv.AppendInt(dst, int64(tc.Index), 10)
				if tc.ID != "" {
					dst = append(dst, `,"id":`...)
					dst = AppendJSONString(dst, tc.ID)
					dst = append(dst, `,"type":"function"`...)
				}
				dst = append(dst, `,"function":{`...)
				if tc.ID != "" || tc.Name != "" {
					dst = append(dst, `"name":`...)
					dst = AppendJSONString(dst, tc.Name)
					dst = append(dst, ',')
				}
				dst = append(dst, `"arguments":`...)
				dst = AppendJSONString(dst, tc.Arguments)
				dst = append(dst, `}}`...)
			}
			dst = append(dst, ']')
		}
		dst = append(dst, `},"logprobs":null,"finish_reason":`...)
		if ch.FinishReason == "" {
			dst = append(dst, "null"...)
		} else {
			dst = AppendJSONString(dst, ch.FinishReason)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if c.Usage != nil {
		dst = append(dst, `,"usage":{"prompt_tokens":`...)
		dst = strconv.AppendInt(dst, int64(c.Usage.PromptTokens), 10)
		dst = append(dst, `,"completion_tokens":`...)
		dst = strconv.AppendInt(dst, int64(c.Usage.CompletionTokens), 10)
		dst = append(dst, `,"total_tokens":`...)
		dst = strconv.AppendInt(dst, int64(c.Usage.TotalTokens), 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// AppendJSONString appends s as a JSON string, escaping as encoding/json
// does (HTML-safe escapes aside), without allocating. It is
// jsonscan.AppendString, kept under this name for the adapters that
// write with it.
func AppendJSONString(dst []byte, s string) []byte { return jsonscan.AppendString(dst, s) }
