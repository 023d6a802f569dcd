package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/shared/llm"
)

// Limits on fields, checked before anything is sent upstream.
const (
	maxMessages = 10_000
	maxN        = 128
	maxModelLen = 256
)

var validRoles = map[string]bool{
	"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true,
}

// decodeError turns a json.Unmarshal failure into a client error that
// names the field at fault where encoding/json knows it.
func decodeError(err error) *llm.Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "",
			"We could not parse the JSON body of your request: %v at byte %d.", se, se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "The request body must be a JSON object.")
		}
		return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, te.Field,
			"Invalid type for '%s': expected %s, got %s.", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "",
		"We could not parse the JSON body of your request: %v.", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "ptr":
		return "a value of another type"
	}
	return "a number"
}

func missing(param string) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, "Missing required parameter: '%s'.", param)
}

func checkModel(model string) *llm.Error {
	if model == "" {
		return missing("model")
	}
	if len(model) > maxModelLen {
		return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "model", "'model' is longer than %d characters.", maxModelLen)
	}
	return nil
}

// DecodeChat decodes and checks a chat completions body. It keeps body in
// the request, so an OpenAI-compatible upstream receives it unchanged.
func DecodeChat(body []byte) (*llm.Request, *llm.Error) {
	var c llm.ChatRequest
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, decodeError(err)
	}
	if e := checkModel(c.Model); e != nil {
		return nil, e
	}
	if len(c.Messages) == 0 {
		if c.Messages == nil {
			return nil, missing("messages")
		}
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "messages", "'messages' must contain at least one message.")
	}
	if len(c.Messages) > maxMessages {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "messages", "'messages' holds more than %d messages.", maxMessages)
	}
	for i, m := range c.Messages {
		if m.Role == "" {
			return nil, missing(fmt.Sprintf("messages[%d].role", i))
		}
		if !validRoles[m.Role] {
			return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].role", i),
				"Invalid value for 'messages[%d].role': %q is not one of system, developer, user, assistant, tool.", i, m.Role)
		}
		if m.Role == "tool" && m.ToolCallID == "" {
			return nil, missing(fmt.Sprintf("messages[%d].tool_call_id", i))
		}
		if len(m.Content) > 0 {
			switch m.Content[0] {
			case '"', '[', 'n':
			default:
				return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, fmt.Sprintf("messages[%d].content", i),
					"Invalid type for 'messages[%d].content': expected a string or an array of content parts.", i)
			}
		}
	}
	if c.N != nil && (*c.N < 1 || *c.N > maxN) {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "n", "'n' must be between 1 and %d.", maxN)
	}
	for i, t := range c.Tools {
		if t.Type == "" {
			return nil, missing(fmt.Sprintf("tools[%d].type", i))
		}
	}
	if c.StreamOptions != nil && !c.Stream {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "stream_options",
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return &llm.Request{
		Op:           llm.OpChat,
		Model:        c.Model,
		Stream:       c.Stream,
		IncludeUsage: c.StreamOptions != nil && c.StreamOptions.IncludeUsage,
		Chat:         &c,
		Body:         body,
	}, nil
}

type completionRequest struct {
	Model         string             `json:"model"`
	Prompt        json.RawMessage    `json:"prompt"`
	Stream        bool               `json:"stream"`
	StreamOptions *llm.StreamOptions `json:"stream_options"`
	N             *int               `json:"n"`
}

// DecodeCompletion decodes and checks a legacy completions body.
func DecodeCompletion(body []byte) (*llm.Request, *llm.Error) {
	var c completionRequest
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, decodeError(err)
	}
	if e := checkModel(c.Model); e != nil {
		return nil, e
	}
	if len(c.Prompt) == 0 || string(c.Prompt) == "null" {
		return nil, missing("prompt")
	}
	if c.N != nil && (*c.N < 1 || *c.N > maxN) {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "n", "'n' must be between 1 and %d.", maxN)
	}
	if c.StreamOptions != nil && !c.Stream {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "stream_options",
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return &llm.Request{
		Op: llm.OpCompletion, Model: c.Model, Stream: c.Stream,
		IncludeUsage: c.StreamOptions != nil && c.StreamOptions.IncludeUsage,
		Body:         body,
	}, nil
}

type embeddingRequest struct {
	Model string          `json:"model"`
	Input json.RawMessage `json:"input"`
}

// DecodeEmbedding decodes and checks an embeddings body.
func DecodeEmbedding(body []byte) (*llm.Request, *llm.Error) {
	var c embeddingRequest
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, decodeError(err)
	}
	if e := checkModel(c.Model); e != nil {
		return nil, e
	}
	in := strings.TrimSpace(string(c.Input))
	if in == "" || in == "null" {
		return nil, missing("input")
	}
	if in == `""` || in == "[]" {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "input", "'input' must not be empty.")
	}
	return &llm.Request{Op: llm.OpEmbedding, Model: c.Model, Body: body}, nil
}
