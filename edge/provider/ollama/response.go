package ollama

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/tidwall/gjson"
)

// errBadAnswer is the error for an upstream body that is not what Ollama
// sends. It is retryable: nothing reached the client yet.
func errBadAnswer(what string) *llm.Error {
	return &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream answer is not " + what, Retryable: true}
}

// decodeChat translates a non-streamed /api/chat answer. Tool calls keep
// the ID Ollama gave them (servers since 0.12.10) or get a new one. A
// thinking model's message.thinking has no canonical field and is
// dropped.
func decodeChat(b []byte, model string) (*llm.ChatCompletion, error) {
	if !gjson.ValidBytes(b) {
		return nil, errBadAnswer("valid JSON")
	}
	top := gjson.ParseBytes(b)
	if !top.IsObject() {
		return nil, errBadAnswer("a chat answer")
	}
	if e := top.Get("error"); e.Exists() {
		return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "upstream answer is an error", Retryable: true, Cause: errors.New(e.String())}
	}
	msg := top.Get("message")
	if !msg.IsObject() {
		return nil, errBadAnswer("a chat answer")
	}
	if m := top.Get("model").Str; m != "" {
		model = m
	}
	var calls []llm.ToolCall
	if tcs := msg.Get("tool_calls"); tcs.IsArray() {
		tcs.ForEach(func(_, tc gjson.Result) bool {
			calls = append(calls, toolCall(tc))
			return true
		})
	}
	am := llm.AnswerMessage{Role: llm.RoleAssistant, ToolCalls: calls}
	if text := msg.Get("content").Str; text != "" || len(calls) == 0 {
		am.Content = &text
	}
	finish := llm.FinishFrom(llm.FormatOllama, top.Get("done_reason").Str)
	if len(calls) > 0 {
		finish = llm.FinishToolCalls
	} else if finish == "" {
		finish = llm.FinishStop
	}
	u := usage(top.Get("prompt_eval_count").Int(), top.Get("eval_count").Int())
	return &llm.ChatCompletion{
		ID:      newID("chatcmpl-"),
		Object:  "chat.completion",
		Created: unixTime(top.Get("created_at").Str),
		Model:   model,
		Choices: []llm.Choice{{Message: am, FinishReason: finish, Logprobs: []byte("null")}},
		Usage:   &u,
	}, nil
}

// toolCall translates one of Ollama's tool calls, whose arguments are an
// object rather than JSON text.
func toolCall(tc gjson.Result) llm.ToolCall {
	fn := tc.Get("function")
	id := tc.Get("id").Str
	if id == "" {
		id = newID("call_")
	}
	args := fn.Get("arguments")
	text := args.Raw
	switch {
	case args.Type == gjson.String:
		text = args.Str // a proxy that already speaks OpenAI's shape
	case !args.IsObject():
		text = "{}"
	}
	return llm.ToolCall{ID: id, Type: "function", Function: llm.FunctionCall{Name: fn.Get("name").Str, Arguments: text}}
}

func usage(prompt, completion int64) llm.Usage {
	return llm.Usage{PromptTokens: int(prompt), CompletionTokens: int(completion), TotalTokens: int(prompt + completion)}
}

// decodeEmbed translates an /api/embed answer to an OpenAI embeddings
// body. Floats are copied as Ollama wrote them; base64 is little-endian
// float32, as OpenAI encodes it.
func decodeEmbed(b []byte, model string, b64 bool) ([]byte, llm.Usage, error) {
	if !gjson.ValidBytes(b) {
		return nil, llm.Usage{}, errBadAnswer("valid JSON")
	}
	top := gjson.ParseBytes(b)
	embs := top.Get("embeddings")
	if !embs.IsArray() {
		return nil, llm.Usage{}, errBadAnswer("an embeddings answer")
	}
	if m := top.Get("model").Str; m != "" {
		model = m
	}
	out := make([]byte, 0, len(b)+256)
	out = append(out, `{"object":"list","data":[`...)
	var raw []byte
	var bad bool
	i := 0
	embs.ForEach(func(_, vec gjson.Result) bool {
		if !vec.IsArray() {
			bad = true
			return false
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"object":"embedding","index":`...)
		out = strconv.AppendInt(out, int64(i), 10)
		out = append(out, `,"embedding":`...)
		if b64 {
			raw = raw[:0]
			vec.ForEach(func(_, x gjson.Result) bool {
				f, err := strconv.ParseFloat(x.Raw, 32)
				if x.Type != gjson.Number || err != nil {
					bad = true
					return false
				}
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(f)))
				return true
			})
			out = append(out, '"')
			out = base64.StdEncoding.AppendEncode(out, raw)
			out = append(out, '"')
		} else {
			out = append(out, '[')
			n := 0
			vec.ForEach(func(_, x gjson.Result) bool {
				if x.Type != gjson.Number {
					bad = true
					return false
				}
				if n > 0 {
					out = append(out, ',')
				}
				out = append(out, x.Raw...)
				n++
				return true
			})
			out = append(out, ']')
		}
		out = append(out, '}')
		i++
		return !bad
	})
	if bad {
		return nil, llm.Usage{}, errBadAnswer("an embeddings answer")
	}
	u := usage(top.Get("prompt_eval_count").Int(), 0)
	out = append(out, `],"model":`...)
	out = llm.AppendJSONString(out, model)
	out = append(out, `,"usage":{"prompt_tokens":`...)
	out = strconv.AppendInt(out, int64(u.PromptTokens), 10)
	out = append(out, `,"total_tokens":`...)
	out = strconv.AppendInt(out, int64(u.TotalTokens), 10)
	out = append(out, "}}"...)
	return out, u, nil
}
