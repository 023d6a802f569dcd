package bedrock

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/tidwall/gjson"
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

func usage(u gjson.Result) llm.Usage {
	in, out := int(u.Get("inputTokens").Int()), int(u.Get("outputTokens").Int())
	total := int(u.Get("totalTokens").Int())
	if total == 0 {
		total = in + out
	}
	return llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: total}
}

// compact returns a JSON value as compact text: tool call arguments.
func compact(v gjson.Result) string {
	if !v.IsObject() {
		return "{}"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(v.Raw)); err != nil {
		return "{}"
	}
	return b.String()
}

// decodeResponse translates a Converse response into a chat completion:
// text blocks joined into the content, toolUse blocks into tool calls.
// Other blocks (reasoning, citations) have no OpenAI counterpart and are
// dropped.
func decodeResponse(provider string, b []byte, id, model string, created int64) (*llm.ChatCompletion, error) {
	if !gjson.ValidBytes(b) {
		return nil, badAnswer(provider)
	}
	top := gjson.ParseBytes(b)
	content := top.Get("output.message.content")
	if !content.IsArray() {
		return nil, badAnswer(provider)
	}
	var (
		text  strings.Builder
		calls []llm.ToolCall
	)
	content.ForEach(func(_, blk gjson.Result) bool {
		if t := blk.Get("text"); t.Type == gjson.String {
			text.WriteString(t.Str)
		} else if tu := blk.Get("toolUse"); tu.IsObject() {
			calls = append(calls, llm.ToolCall{
				ID:       tu.Get("toolUseId").Str,
				Type:     "function",
				Function: llm.FunctionCall{Name: tu.Get("name").Str, Arguments: compact(tu.Get("input"))},
			})
		}
		return true
	})
	msg := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: calls}
	if s := text.String(); s != "" || len(calls) == 0 {
		msg.Content = &s
	}
	u := usage(top.Get("usage"))
	return &llm.ChatCompletion{
		ID:      id,
		Object:  "chat.completion",
		Created: created,
		Model:   model,
		Choices: []llm.Choice{{
			Message:      msg,
			FinishReason: finish(top.Get("stopReason").Str, len(calls) > 0),
			Logprobs:     json.RawMessage("null"),
		}},
		Usage: &u,
	}, nil
}
