package gemini

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// maxCandidates bounds the candidate indexes an answer may use; Gemini
// allows candidateCount up to 8.
const maxCandidates = 16

func errNotGemini() *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream,
		Message: "answer is not a valid Gemini response", Retryable: true}
}

// decodeResponse translates a GenerateContentResponse into a chat
// completion. model names the answer when Gemini does not. It reads the
// body once, in document order (jsonscan); strings in the completion
// point into b, which must not change afterwards. Tool calls without an
// ID of their own get theirs after the walk, because Gemini writes the
// responseId they follow from after the candidates.
func decodeResponse(b []byte, model string) (*llm.ChatCompletion, error) {
	sc := jsonscan.New(b)
	if sc.Peek() != jsonscan.Object {
		return nil, errNotGemini()
	}
	var respID, version, block string
	var usage llm.Usage
	var choices []llm.Choice
	bad := false // a candidate index out of range
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "responseId":
			respID = sc.OptStr()
		case "modelVersion":
			version = sc.OptStr()
		case "candidates":
			choices = make([]llm.Choice, 0, 1)
			forEachValue(sc, func(key []byte, pos int) bool {
				if key != nil {
					pos = int(jsonscan.LooseIntText(string(key)))
				}
				ch, ok := readChoice(sc, pos)
				if !ok {
					bad = true
					return false
				}
				choices = append(choices, ch)
				return true
			})
		case "promptFeedback":
			block = blockReason(sc)
		case "usageMetadata":
			usage = scanUsage(sc)
		}
		return !bad
	})
	if bad || sc.End() != nil {
		return nil, errNotGemini()
	}
	if version != "" {
		model = version
	}
	cc := &llm.ChatCompletion{
		ID:      "chatcmpl-" + respID,
		Object:  "chat.completion",
		Created: time.Now().Unix(),
		Model:   model,
		Choices: choices,
	}
	if respID == "" {
		cc.ID = "chatcmpl-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	if len(choices) == 0 {
		if block != "" {
			return nil, blocked(block)
		}
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "answer holds no candidates", Retryable: true}
	}
	ids := newCallIDs(respID)
	for i := range choices {
		calls := choices[i].Message.ToolCalls
		for j := range calls {
			if calls[j].ID == "" {
				calls[j].ID = ids.next()
			}
		}
	}
	cc.Usage = &usage
	return cc, nil
}

// readChoice reads one candidate at position pos of the candidates
// array. ok is false when it names an index out of range. A candidate
// that is not an object is an empty answer, as Gemini's absent fields
// would be.
func readChoice(sc *jsonscan.Scanner, pos int) (ch llm.Choice, ok bool) {
	idx := pos
	var text strings.Builder
	var finish string
	ch = llm.Choice{Message: llm.AnswerMessage{Role: llm.RoleAssistant}, Logprobs: nullJSON}
	if sc.Peek() == jsonscan.Object {
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "index":
				idx = int(sc.LooseInt())
			case "finishReason":
				finish = sc.OptStr()
			case "content":
				if sc.Peek() != jsonscan.Object {
					return true
				}
				sc.Object(func(k []byte) bool {
					if string(k) == "parts" {
						forEachValue(sc, func([]byte, int) bool {
							readAnswerPart(sc, &text, &ch.Message.ToolCalls)
							return true
						})
					}
					return true
				})
			}
			return true
		})
	} else {
		sc.Skip()
	}
	if idx < 0 || idx >= maxCandidates {
		return ch, false
	}
	ch.Index = idx
	if text.Len() > 0 || len(ch.Message.ToolCalls) == 0 {
		s := text.String()
		ch.Message.Content = &s
	}
	ch.FinishReason = finishReason(finish, len(ch.Message.ToolCalls) > 0)
	if ch.FinishReason == "" {
		ch.FinishReason = llm.FinishStop
	}
	return ch, true
}

// readAnswerPart reads one part of a candidate's content: its text goes to
// text and its function call to calls, unless it is a thought summary,
// which is not part of the answer.
func readAnswerPart(sc *jsonscan.Scanner, text *strings.Builder, calls *[]llm.ToolCall) {
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return
	}
	var t string
	var fc functionCall
	hasText, hasCall, thought := false, false, false
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "text":
			if sc.Peek() == jsonscan.String {
				t, hasText = sc.Str(), true
			}
		case "thought":
			thought = looseBool(sc)
		case "functionCall":
			hasCall = readFunctionCall(sc, &fc)
		}
		return true
	})
	if thought || sc.Err() != nil {
		return
	}
	if hasText {
		text.WriteString(t)
	}
	if hasCall {
		*calls = append(*calls, llm.ToolCall{ID: fc.id, Type: "function",
			Function: llm.FunctionCall{Name: fc.name, Arguments: compactArgs(fc.args)}})
	}
}

// functionCall is a part's functionCall: args is its raw JSON object,
// nil when it has none.
type functionCall struct {
	name, id string
	args     []byte
}

// readFunctionCall reads a functionCall value into fc, reporting
// whether it was an object.
func readFunctionCall(sc *jsonscan.Scanner, fc *functionCall) bool {
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return false
	}
	sc.Object(func(k []byte) bool {
		switch string(k) {
		case "name":
			fc.name = sc.OptStr()
		case "id":
			fc.id = sc.OptStr()
		case "args":
			fc.args = nil
			if sc.Peek() == jsonscan.Object {
				fc.args = sc.Raw()
			}
		}
		return true
	})
	return true
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

// scanUsage reads usageMetadata; anything but an object is no usage.
// Thinking tokens are output tokens (they are billed as such and OpenAI
// counts reasoning tokens in completion_tokens), and tool-use prompt
// tokens are prompt tokens, so prompt plus completion adds up to
// Gemini's total.
func scanUsage(sc *jsonscan.Scanner) llm.Usage {
	var out llm.Usage
	if sc.Peek() == jsonscan.Object {
		sc.Object(func(k []byte) bool {
			switch string(k) {
			case "promptTokenCount", "toolUsePromptTokenCount":
				out.PromptTokens += int(sc.LooseInt())
			case "candidatesTokenCount", "thoughtsTokenCount":
				out.CompletionTokens += int(sc.LooseInt())
			case "totalTokenCount":
				out.TotalTokens = int(sc.LooseInt())
			}
			return true
		})
	} else {
		sc.Skip()
	}
	if out.TotalTokens == 0 {
		out.TotalTokens = out.PromptTokens + out.CompletionTokens
	}
	return out
}

// compactArgs returns a functionCall's args, a raw JSON object or nil,
// as compact JSON text, the shape OpenAI gives tool call arguments in.
func compactArgs(args []byte) string {
	if len(args) == 0 {
		return "{}"
	}
	return string(appendCompact(make([]byte, 0, len(args)), args))
}

// forEachValue calls each for every element of an array (with its
// index), every member of an object (with its key) or, for any other
// value, once (with index 0); each must read the value. It is how
// answers have always been read (gjson's ForEach), so an answer that
// puts a scalar or an object where Gemini writes an array reads as it
// did: {"candidates":null} is one empty candidate, not none.
func forEachValue(sc *jsonscan.Scanner, each func(key []byte, i int) bool) {
	switch sc.Peek() {
	case jsonscan.Array:
		sc.Array(func(i int) bool { return each(nil, i) })
	case jsonscan.Object:
		sc.Object(func(k []byte) bool { return each(k, 0) })
	default:
		each(nil, 0)
	}
}

// looseBool reads a value as a boolean the lenient way: true, a string
// that says true ("1", "t", "TRUE"…), or a number other than 0.
func looseBool(sc *jsonscan.Scanner) bool {
	switch sc.Peek() {
	case jsonscan.Bool:
		return sc.Bool()
	case jsonscan.String:
		b, _ := strconv.ParseBool(strings.ToLower(sc.Str()))
		return b
	case jsonscan.Number:
		return sc.Float() != 0
	}
	sc.Skip()
	return false
}

// appendCompact appends valid JSON text src without insignificant
// whitespace.
func appendCompact(dst, src []byte) []byte {
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

// blockReason reads promptFeedback's blockReason; "" when the feedback
// is not an object or has none.
func blockReason(sc *jsonscan.Scanner) string {
	block := ""
	if sc.Peek() != jsonscan.Object {
		sc.Skip()
		return ""
	}
	sc.Object(func(k []byte) bool {
		if string(k) == "blockReason" {
			block = sc.OptStr()
		}
		return true
	})
	return block
}
