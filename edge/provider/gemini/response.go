package gemini

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/tidwall/gjson"
)

// maxCandidates bounds the candidate indexes an answer may use; Gemini
// allows candidateCount up to 8.
const maxCandidates = 16

func errNotGemini() *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
		Message: "answer is not a valid Gemini response", Retryable: true}
}

// decodeResponse translates a GenerateContentResponse into a chat
// completion. model names the answer when Gemini does not.
func decodeResponse(b []byte, model string) (*llm.ChatCompletion, error) {
	if !gjson.ValidBytes(b) {
		return nil, errNotGemini()
	}
	top := gjson.ParseBytes(b)
	if !top.IsObject() {
		return nil, errNotGemini()
	}
	respID := top.Get("responseId").Str
	if v := top.Get("modelVersion").Str; v != "" {
		model = v
	}
	cc := &llm.ChatCompletion{
		ID:      "chatcmpl-" + respID,
		Object:  "chat.completion",
		Created: time.Now().Unix(),
		Model:   model,
		Choices: []llm.Choice{},
	}
	if respID == "" {
		cc.ID = "chatcmpl-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	ids := newCallIDs(respID)
	var err error
	top.Get("candidates").ForEach(func(pos, cand gjson.Result) bool {
		idx := int(pos.Int())
		if v := cand.Get("index"); v.Exists() {
			idx = int(v.Int())
		}
		if idx < 0 || idx >= maxCandidates {
			err = errNotGemini()
			return false
		}
		ch := llm.Choice{Index: idx, Message: llm.AnswerMessage{Role: llm.RoleAssistant}, Logprobs: nullJSON}
		var text strings.Builder
		cand.Get("content.parts").ForEach(func(_, p gjson.Result) bool {
			if p.Get("thought").Bool() {
				return true // a thought summary, not part of the answer
			}
			if t := p.Get("text"); t.Type == gjson.String {
				text.WriteString(t.Str)
			}
			if fc := p.Get("functionCall"); fc.IsObject() {
				id := fc.Get("id").Str
				if id == "" {
					id = ids.next()
				}
				ch.Message.ToolCalls = append(ch.Message.ToolCalls, llm.ToolCall{
					ID: id, Type: "function",
					Function: llm.FunctionCall{Name: fc.Get("name").Str, Arguments: compactArgs(fc.Get("args"))},
				})
			}
			return true
		})
		if text.Len() > 0 || len(ch.Message.ToolCalls) == 0 {
			s := text.String()
			ch.Message.Content = &s
		}
		ch.FinishReason = finishReason(cand.Get("finishReason").Str, len(ch.Message.ToolCalls) > 0)
		if ch.FinishReason == "" {
			ch.FinishReason = llm.FinishStop
		}
		cc.Choices = append(cc.Choices, ch)
		return true
	})
	if err != nil {
		return nil, err
	}
	if len(cc.Choices) == 0 {
		if reason := top.Get("promptFeedback.blockReason").Str; reason != "" {
			return nil, blocked(reason)
		}
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "answer holds no candidates", Retryable: true}
	}
	u := parseUsage(top.Get("usageMetadata"))
	cc.Usage = &u
	return cc, nil
}

var nullJSON = []byte("null")

// blocked is the error for a prompt Gemini refused to answer. It is the
// client's prompt that was refused, so it is a 400 and another target
// is not tried.
func blocked(reason string) *llm.Error {
	return &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Code: llm.FinishContentFilter,
		Message: "the upstream provider's content filter blocked the prompt (reason: " + reason + ")"}
}

// finishReason maps a candidate's finishReason. Gemini says STOP for a
// turn that ends in function calls, which OpenAI calls tool_calls.
func finishReason(reason string, calls bool) string {
	if calls && reason != "" {
		return llm.FinishToolCalls
	}
	return llm.FinishFrom(llm.FormatGemini, reason)
}

// parseUsage reads usageMetadata. Thinking tokens are output tokens
// (they are billed as such and OpenAI counts reasoning tokens in
// completion_tokens), and tool-use prompt tokens are prompt tokens, so
// prompt plus completion adds up to Gemini's total.
func parseUsage(u gjson.Result) llm.Usage {
	var out llm.Usage
	u.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "promptTokenCount", "toolUsePromptTokenCount":
			out.PromptTokens += int(v.Int())
		case "candidatesTokenCount", "thoughtsTokenCount":
			out.CompletionTokens += int(v.Int())
		case "totalTokenCount":
			out.TotalTokens = int(v.Int())
		}
		return true
	})
	if out.TotalTokens == 0 {
		out.TotalTokens = out.PromptTokens + out.CompletionTokens
	}
	return out
}

// compactArgs returns a functionCall's args as compact JSON text, the
// shape OpenAI gives tool call arguments in.
func compactArgs(args gjson.Result) string {
	if !args.IsObject() {
		return "{}"
	}
	return string(appendCompact(make([]byte, 0, len(args.Raw)), args.Raw))
}

// appendCompact appends valid JSON text src without insignificant
// whitespace.
func appendCompact(dst []byte, src string) []byte {
	inString := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			dst = append(dst, c)
			switch c {
			case '\\':
				if i+1 < len(src) {
					i++
					dst = append(dst, src[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inString = true
		}
		dst = append(dst, c)
	}
	return dst
}

// callIDs makes tool call IDs for one answer. Gemini's function calls
// have no ID of their own (outside its Live API), while OpenAI clients
// need one to answer a call. IDs follow from the answer's responseId, so
// one answer always gets the same IDs; answers without one get random
// IDs.
type callIDs struct {
	seed uint64
	n    uint64
}

func newCallIDs(responseID string) callIDs {
	if responseID == "" {
		return callIDs{seed: rand.Uint64()}
	}
	// FNV-1a.
	h := uint64(14695981039346656037)
	for i := 0; i < len(responseID); i++ {
		h ^= uint64(responseID[i])
		h *= 1099511628211
	}
	return callIDs{seed: h}
}

// next returns "call_" and 16 hex digits, distinct for each call of the
// answer (splitmix64 of the seed plus a counter).
func (c *callIDs) next() string {
	c.n++
	z := c.seed + c.n*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	var b [21]byte
	copy(b[:], "call_")
	const hex = "0123456789abcdef"
	for i := 20; i >= 5; i-- {
		b[i] = hex[z&0xF]
		z >>= 4
	}
	return string(b[:])
}
