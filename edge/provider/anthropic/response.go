package anthropic

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/tidwall/gjson"
)

// idPrefix starts every completion ID, so clients that check OpenAI's
// ID shape accept it; the rest is Anthropic's message ID, which keeps
// the answer traceable in Anthropic's console.
const idPrefix = "chatcmpl-"

// badAnswer is the error for a 200 answer that is not a Messages
// response: nothing reached the client, so another target may serve it.
func badAnswer(provider string) *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Retryable: true,
		Message: "upstream provider " + provider + " sent an answer that is not a Messages response"}
}

// decodeMessage translates a non-streamed Messages response into a chat
// completion. Text blocks are joined into the content; tool_use blocks
// become tool calls whose arguments are the input as compact JSON.
// Other blocks (thinking, server tools' results) have no OpenAI
// counterpart and are dropped. model names the answer when Anthropic's
// does not.
func decodeMessage(provider string, b []byte, model string, created int64) (*llm.ChatCompletion, error) {
	if !gjson.ValidBytes(b) {
		return nil, badAnswer(provider)
	}
	top := gjson.ParseBytes(b)
	if top.Get("type").Str == "error" {
		return nil, eventError(provider, top.Get("error"))
	}
	content := top.Get("content")
	if !top.IsObject() || !content.IsArray() {
		return nil, badAnswer(provider)
	}
	var (
		text  strings.Builder
		calls []llm.ToolCall
	)
	content.ForEach(func(_, blk gjson.Result) bool {
		switch blk.Get("type").Str {
		case "text":
			text.WriteString(blk.Get("text").Str)
		case "tool_use":
			calls = append(calls, llm.ToolCall{
				ID:       blk.Get("id").Str,
				Type:     "function",
				Function: llm.FunctionCall{Name: blk.Get("name").Str, Arguments: compactJSON(blk.Get("input"))},
			})
		}
		return true
	})
	msg := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: calls}
	if s := text.String(); s != "" || len(calls) == 0 {
		msg.Content = &s // OpenAI's content is null only beside tool calls
	}
	if m := top.Get("model").Str; m != "" {
		model = m
	}
	var t tokens
	t.update(top.Get("usage"))
	usage := t.usage()
	return &llm.ChatCompletion{
		ID:      idPrefix + top.Get("id").Str,
		Object:  "chat.completion",
		Created: created,
		Model:   model,
		Choices: []llm.Choice{{
			Message:      msg,
			FinishReason: finish(top.Get("stop_reason").Str, len(calls) > 0),
			Logprobs:     json.RawMessage("null"),
		}},
		Usage: &usage,
	}, nil
}

// finish maps Anthropic's stop reason. A missing one is a turn that
// simply ended, since OpenAI's clients expect a reason on every answer.
func finish(reason string, calledTools bool) string {
	if reason == "" {
		if calledTools {
			return llm.FinishToolCalls
		}
		return llm.FinishStop
	}
	return llm.FinishFrom(llm.FormatAnthropic, reason)
}

// tokens are Anthropic's usage counts. Prompt caching splits the input
// into uncached, cache-read and cache-written tokens; OpenAI's
// prompt_tokens counts them all.
type tokens struct {
	in, cacheRead, cacheWrite, out int
}

// update takes the counts u reports. Counts are cumulative, and a
// message_delta reports only some of them, so absent ones are kept.
func (t *tokens) update(u gjson.Result) {
	u.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "input_tokens":
			t.in = int(v.Int())
		case "cache_read_input_tokens":
			t.cacheRead = int(v.Int())
		case "cache_creation_input_tokens":
			t.cacheWrite = int(v.Int())
		case "output_tokens":
			t.out = int(v.Int())
		}
		return true
	})
}

func (t *tokens) usage() llm.Usage {
	p := t.in + t.cacheRead + t.cacheWrite
	return llm.Usage{PromptTokens: p, CompletionTokens: t.out, TotalTokens: p + t.out}
}

// compactJSON returns a tool input as a compact JSON text, "{}" when
// there is none: OpenAI clients parse arguments as JSON.
func compactJSON(v gjson.Result) string {
	if !v.Exists() || v.Type == gjson.Null {
		return "{}"
	}
	var buf bytes.Buffer
	if json.Compact(&buf, []byte(v.Raw)) != nil {
		return "{}"
	}
	return buf.String()
}
