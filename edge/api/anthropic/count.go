package anthropic

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// HeaderTokenCount says who counted a count_tokens answer: "upstream"
// (the provider's own count_tokens), "tokenizer" (the local model's
// tokenizer, through Ollama) or "estimate" (neither could: about four
// bytes a token, never exact).
const HeaderTokenCount = "X-Meridian-Token-Count"

// Counts' sources.
const (
	CountUpstream  = "upstream"
	CountTokenizer = "tokenizer"
	CountEstimate  = "estimate"
)

// countTokens serves POST /v1/messages/count_tokens. The count goes to
// the model's route like any request (an OpCountTokens): an Anthropic
// upstream answers with its own count_tokens, a local model with its
// tokenizer. A target that cannot count (an OpenAI-compatible or Gemini
// provider, a peer) or that fails gets an estimate instead, marked in
// HeaderTokenCount. Counting generates nothing, so it is charged to no
// limit and leaves no usage record; a key still needs access to the
// model.
func (s *Surface) countTokens(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		WriteError(w, r, llm.Errorf(http.StatusMethodNotAllowed, llm.TypeInvalidRequest, "", "Method %s is not allowed for %s; use POST.", r.Method, r.URL.Path))
		return
	}
	c := &s.cfg
	if e := c.Admit(); e != nil {
		WriteError(w, r, e)
		return
	}
	defer c.Done()
	id, e := c.Authenticate(r)
	if e != nil {
		WriteError(w, r, e)
		return
	}
	body, e := c.ReadBody(w, r)
	if e != nil {
		WriteError(w, r, e)
		return
	}
	if r.Header.Get("Anthropic-Version") == "" {
		WriteError(w, r, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "anthropic-version: header is required"))
		return
	}
	req, e := DecodeCountTokens(body)
	if e != nil {
		WriteError(w, r, e)
		return
	}
	req.ID = r.Header.Get(api.HeaderRequestID)
	req.Native, req.NativeFormat = body, llm.FormatAnthropic
	if !id.AllowsModel(req.Model) {
		WriteError(w, r, api.ErrModelNotAllowed(id.KeyID, req.Model))
		return
	}
	start := time.Now()
	res, err := c.Gateway.Do(r.Context(), req)
	source := CountEstimate
	var n int
	switch {
	case err == nil:
		n = res.Response.Usage.PromptTokens
		source = CountUpstream
		if res.Route.Kind == "local" {
			source = CountTokenizer
		}
		w.Header().Set(api.HeaderRoute, res.Route.Header())
	case errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		return // nobody is listening
	default:
		if le := llm.AsError(err); res.Route.Attempt == 0 && le.Code != llm.CodeUnsupported && le.Status != http.StatusServiceUnavailable {
			// Refused before any target was asked: an unknown model, a
			// residency policy.
			WriteError(w, r, le)
			return
		}
		n = Estimate(req.Chat)
	}
	h := w.Header()
	h.Set(HeaderTokenCount, source)
	h.Set(api.HeaderOverhead, api.Micros(time.Since(start)))
	h.Set("Content-Type", "application/json")
	b := append(make([]byte, 0, 32), `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	w.Write(append(b, '}'))
}

// Estimate guesses a request's input tokens without a tokenizer: about
// four bytes of text a token, a few tokens a message for its framing,
// and the tools' definitions. It is for clients budgeting a prompt, and
// the answer says it is an estimate.
func Estimate(c *llm.ChatRequest) int {
	if c == nil {
		return 0
	}
	bytes := 0
	for i := range c.Messages {
		m := &c.Messages[i]
		bytes += len(m.Content) + 16
		for _, tc := range m.ToolCalls {
			bytes += len(tc.Function.Name) + len(tc.Function.Arguments) + 8
		}
	}
	for _, t := range c.Tools {
		if f := t.Function; f != nil {
			bytes += len(f.Name) + len(f.Description) + len(f.Parameters)
		}
	}
	return max((bytes+3)/4, 1)
}
