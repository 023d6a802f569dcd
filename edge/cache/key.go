package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"math"
	"slices"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// Key names one cached answer: a SHA-256 over the tenant, the model and
// every field of the canonical request that can change the answer.
type Key [sha256.Size]byte

// String is the key in hex, as the dry run shows it.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// ErrNotChat is returned for a request that is not a chat completion:
// only those are cached.
var ErrNotChat = errors.New("cache: only chat completions are cached")

// KeyOf returns the key of req for tenant. The hash covers what can
// change the answer, in the canonical request's terms, so an OpenAI and
// an Anthropic request for the same thing share a key:
//   - the tenant and the model the client named;
//   - whether the answer streams (a stream is replayed as a stream, a
//     plain answer as a plain one, so they are kept apart);
//   - every message: role, name, tool call ID, content as parts (a
//     string and one text part are the same), tool calls;
//   - tools, tool_choice, response_format;
//   - the parameters: temperature, top_p, top_k, the output limit
//     (max_tokens and max_completion_tokens are one), n, stop (a string
//     and a one-element list are the same), seed, logprobs, top_logprobs;
//   - any top-level field of the client's body this list does not name
//     (frequency_penalty, reasoning_effort, thinking, …), by name and
//     compacted value, so a field Meridian passes through unread can
//     never make two different requests share an answer.
//
// Fields that cannot change the answer are left out: stream_options,
// user and Anthropic's metadata.
func KeyOf(tenant string, req *llm.Request) (Key, error) {
	k, _, err := keyOf(tenant, req, false)
	return k, err
}

// ErrNoUserTurn is returned by ContextKeyOf for a request whose last
// message is not a user's text.
var ErrNoUserTurn = errors.New("cache: the last message is not a user's text")

// ContextKeyOf returns what the semantic cache matches exactly, and the
// text it compares: the key of req with its last message's content left
// out (the system prompt, the tools, the parameters and every earlier
// turn still count, byte for byte), and that last user turn's text.
func ContextKeyOf(tenant string, req *llm.Request) (Key, string, error) {
	return keyOf(tenant, req, true)
}

func keyOf(tenant string, req *llm.Request, semantic bool) (Key, string, error) {
	if req.Op != llm.OpChat {
		return Key{}, "", ErrNotChat
	}
	c, err := req.ChatRequest()
	if err != nil {
		return Key{}, "", err
	}
	h := hasher{h: sha256.New()}
	h.str("meridian-cache-v1")
	h.bool(semantic)
	h.str(tenant)
	h.str(req.Model)
	h.bool(req.Stream)
	h.int(int64(len(c.Messages)))
	msgs := c.Messages
	var last string
	if semantic {
		n := len(msgs)
		if n == 0 || msgs[n-1].Role != llm.RoleUser || msgs[n-1].Name != "" {
			return Key{}, "", ErrNoUserTurn
		}
		text, ok := msgs[n-1].Text()
		if !ok || text == "" {
			return Key{}, "", ErrNoUserTurn
		}
		last, msgs = text, msgs[:n-1]
	}
	for i := range msgs {
		if err := h.message(&msgs[i]); err != nil {
			return Key{}, "", err
		}
	}
	h.int(int64(len(c.Tools)))
	for _, t := range c.Tools {
		h.str(t.Type)
		if f := t.Function; f != nil {
			h.str(f.Name)
			h.str(f.Description)
			h.raw(f.Parameters)
			h.optBool(f.Strict)
		} else {
			h.str("")
		}
	}
	h.raw(c.ToolChoice)
	h.raw(c.ResponseFormat)
	h.optFloat(c.Temperature)
	h.optFloat(c.TopP)
	h.optInt(c.TopK)
	maxOut := c.MaxTokens
	if c.MaxCompletionTokens != nil {
		maxOut = c.MaxCompletionTokens
	}
	h.optInt(maxOut)
	h.optInt(c.N)
	h.stop(c.Stop)
	if c.Seed != nil {
		h.bool(true)
		h.int(*c.Seed)
	} else {
		h.bool(false)
	}
	h.optBool(c.Logprobs)
	h.optInt(c.TopLogprobs)
	// The client's format is not hashed: only fields it adds are.
	switch {
	case req.NativeFormat == llm.FormatAnthropic && req.Native != nil && c.HasExtra:
		h.fields(slices.Clone(c.Extra)) // read once, by the Anthropic decoder
	case req.NativeFormat == llm.FormatAnthropic && req.Native != nil:
		h.extra(req.Native, anthropicKnown)
	case req.NativeFormat == llm.FormatResponses && req.Native != nil:
		h.extra(req.Native, responsesKnown)
	case c.HasExtra && req.Native == nil:
		h.fields(slices.Clone(c.Extra)) // read once, by the decoder
	default:
		h.extra(req.Body, openAIKnown)
	}
	var k Key
	h.h.Sum(k[:0])
	return k, last, nil
}

// The top-level fields each format's decoder reads into the canonical
// request; any other field is hashed as it came.
var (
	openAIKnown = []string{"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
		"temperature", "top_p", "n", "stop", "seed", "tools", "tool_choice", "response_format", "logprobs", "top_logprobs", "user"}
	anthropicKnown = []string{"model", "messages", "system", "stream", "max_tokens", "temperature", "top_p", "top_k",
		"stop_sequences", "metadata", "tools", "tool_choice"}
	responsesKnown = []string{"model", "input", "instructions", "stream", "stream_options", "max_output_tokens", "temperature", "top_p",
		"tools", "tool_choice", "metadata", "user", "safety_identifier", "store"}
)

// hasher writes length-prefixed fields, so no two field sequences hash
// the same bytes.
type hasher struct {
	h   hash.Hash
	buf [8]byte
	cmp bytes.Buffer
}

func (h *hasher) int(n int64) {
	binary.LittleEndian.PutUint64(h.buf[:], uint64(n))
	h.h.Write(h.buf[:])
}

func (h *hasher) str(s string) {
	h.int(int64(len(s)))
	h.h.Write([]byte(s))
}

func (h *hasher) bool(b bool) {
	if b {
		h.int(1)
	} else {
		h.int(0)
	}
}

func (h *hasher) optBool(b *bool) {
	h.bool(b != nil)
	if b != nil {
		h.bool(*b)
	}
}

func (h *hasher) optInt(n *int) {
	h.bool(n != nil)
	if n != nil {
		h.int(int64(*n))
	}
}

func (h *hasher) optFloat(f *float64) {
	h.bool(f != nil)
	if f != nil {
		v := *f
		if v == 0 {
			v = 0 // -0 and 0 are one temperature
		}
		h.int(int64(math.Float64bits(v)))
	}
}

// raw hashes a JSON value compacted, so whitespace does not matter;
// null and absent are one.
func (h *hasher) raw(v []byte) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		h.str("")
		return
	}
	h.cmp.Reset()
	if json.Compact(&h.cmp, v) != nil {
		h.str(string(v)) // not JSON: hashed as it came
		return
	}
	h.str(h.cmp.String())
}

func (h *hasher) message(m *llm.Message) error {
	h.str(m.Role)
	h.str(m.Name)
	h.str(m.ToolCallID)
	parts, err := m.Parts()
	if err != nil {
		return err
	}
	h.int(int64(len(parts)))
	for _, p := range parts {
		h.str(p.Type)
		h.str(p.Text)
		if p.ImageURL != nil {
			h.str(p.ImageURL.URL)
			h.str(p.ImageURL.Detail)
		} else {
			h.str("")
			h.str("")
		}
	}
	h.int(int64(len(m.ToolCalls)))
	for _, tc := range m.ToolCalls {
		h.str(tc.ID)
		h.str(tc.Function.Name)
		h.raw([]byte(tc.Function.Arguments))
	}
	return nil
}

// stop hashes stop sequences as a list: "x" and ["x"] are one.
func (h *hasher) stop(raw json.RawMessage) {
	raw = bytes.TrimSpace(raw)
	var list []string
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			h.raw(raw)
			return
		}
		list = []string{s}
	default:
		if json.Unmarshal(raw, &list) != nil {
			h.raw(raw)
			return
		}
	}
	h.int(int64(len(list)))
	for _, s := range list {
		h.str(s)
	}
}

// extra hashes the top-level fields of body that known does not name,
// sorted by name, so their order in the body does not matter.
func (h *hasher) extra(body []byte, known []string) {
	if len(body) == 0 {
		h.int(0)
		return
	}
	var fields []llm.Field
	s := jsonscan.New(body)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			if slices.Contains(known, string(k)) {
				s.Skip()
				return true
			}
			fields = append(fields, llm.Field{Name: string(k), Raw: s.Raw()})
			return true
		})
	}
	h.fields(fields)
}

// fields hashes fields sorted by name (it sorts them in place), so their
// order in the body does not matter.
func (h *hasher) fields(fields []llm.Field) {
	slices.SortFunc(fields, func(a, b llm.Field) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	h.int(int64(len(fields)))
	for _, f := range fields {
		h.str(f.Name)
		h.raw(f.Raw)
	}
}
