package bedrock

import (
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

func badAnswer(provider string) *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true,
		Message: "upstream provider " + provider + " sent an answer that is not a Converse response"}
}

// finish maps Converse's stop reason to the canonical one. A missing one
// is a turn that simply ended.
func finish(reason string, calledTools bool) string {
	switch reason {
	case "tool_use":
		return llm.FinishToolCalls
	case "max_tokens", "model_context_window_exceeded":
		return llm.FinishLength
	case "guardrail_intervened", "content_filtered":
		return llm.FinishContentFilter
	case "":
		if calledTools {
			return llm.FinishToolCalls
		}
	}
	return llm.FinishStop
}

// readUsage reads Converse's usage object; any other value counts nothing.
func readUsage(s *jsonscan.Scanner) llm.Usage {
	var in, out, total int64
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "inputTokens":
				in = s.LooseInt()
			case "outputTokens":
				out = s.LooseInt()
			case "totalTokens":
				total = s.LooseInt()
			}
			return true
		})
	} else {
		s.Skip()
	}
	u := llm.Usage{PromptTokens: int(in), CompletionTokens: int(out), TotalTokens: int(total)}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}

// compact returns a valid JSON value's text without the whitespace
// between tokens: tool call arguments.
func compact(raw []byte) string {
	out := make([]byte, 0, len(raw))
	in := false // inside a string
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case in && c == '\\':
			out = append(out, c, raw[i+1])
			i++
			continue
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// answer is what decodeResponse reads of a Converse response.
type answer struct {
	content bool // output.message.content is an array
	text    strings.Builder
	calls   []llm.ToolCall
	usage   llm.Usage
	stop    string
}

// decodeResponse translates a Converse response into a chat completion:
// text blocks joined into the content, toolUse blocks into tool calls.
// Other blocks (reasoning, citations) have no OpenAI counterpart and are
// dropped. The body is read once, in order (jsonscan); a repeated key
// takes its last value.
func decodeResponse(provider string, b []byte, id, model string, created int64) (*llm.ChatCompletion, error) {
	var a answer
	s := jsonscan.New(b)
	if s.Peek() == jsonscan.Object {
		s.Object(func(k []byte) bool {
			switch string(k) {
			case "output":
				a.readOutput(s)
			case "usage":
				a.usage = readUsage(s)
			case "stopReason":
				a.stop = s.OptStr()
			}
			return true
		})
	} else {
		s.Skip()
	}
	if s.End() != nil || !a.content {
		return nil, badAnswer(provider)
	}
	msg := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: a.calls}
	if t := a.text.String(); t != "" || len(a.calls) == 0 {
		msg.Content = &t
	}
	return &llm.ChatCompletion{
		ID:      id,
		Object:  "chat.completion",
		Created: created,
		Model:   model,
		Choices: []llm.Choice{{
			Message:      msg,
			FinishReason: finish(a.stop, len(a.calls) > 0),
			Logprobs:     []byte("null"),
		}},
		Usage: &a.usage,
	}, nil
}

// readOutput reads output.message.content.
func (a *answer) readOutput(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		a.content = false
		return
	}
	s.Object(func(k []byte) bool {
		if string(k) != "message" {
			return true
		}
		if s.Peek() != jsonscan.Object {
			s.Skip()
			a.content = false
			return true
		}
		s.Object(func(k []byte) bool {
			if string(k) != "content" {
				return true
			}
			a.text.Reset()
			a.calls = nil
			a.content = s.Peek() == jsonscan.Array
			if !a.content {
				s.Skip()
				return true
			}
			s.Array(func(int) bool { a.readBlock(s); return true })
			return true
		})
		return true
	})
}

// readBlock reads one content block: a text string wins over a toolUse
// object; a block of neither kind is dropped.
func (a *answer) readBlock(s *jsonscan.Scanner) {
	if s.Peek() != jsonscan.Object {
		s.Skip()
		return
	}
	var (
		text           string
		isText, isCall bool
		call           = llm.ToolCall{Type: "function"}
	)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "text":
			isText = s.Peek() == jsonscan.String
			text = s.OptStr()
		case "toolUse":
			isCall = s.Peek() == jsonscan.Object
			if !isCall {
				s.Skip()
				return true
			}
			call.ID, call.Function.Name, call.Function.Arguments = "", "", "{}"
			s.Object(func(k []byte) bool {
				switch string(k) {
				case "toolUseId":
					call.ID = s.OptStr()
				case "name":
					call.Function.Name = s.OptStr()
				case "input":
					if s.Peek() == jsonscan.Object {
						call.Function.Arguments = compact(s.Raw())
					} else {
						s.Skip()
						call.Function.Arguments = "{}"
					}
				}
				return true
			})
		}
		return true
	})
	switch {
	case isText:
		a.text.WriteString(text)
	case isCall:
		a.calls = append(a.calls, call)
	}
}
