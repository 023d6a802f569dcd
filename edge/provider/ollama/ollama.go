// Package ollama is the adapter for Ollama's native API: chat on
// /api/chat and embeddings on /api/embed. (Ollama's OpenAI-compatible /v1
// is served by the openai adapter; the native API is the one that takes
// per-request options such as top_k and the one an Ollama behind a
// proxy is most often exposed with.)
//
// Requests are translated from the canonical OpenAI shape; answers are
// translated back into canonical completions, chunks and OpenAI-format
// embeddings. Ollama streams newline-delimited JSON, not server-sent
// events, and streams unless told otherwise, so every chat request says
// "stream" explicitly.
//
// Error messages built here never contain the provider key or base URL.
package ollama

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Adapter talks to one Ollama server.
type Adapter struct {
	up     upstream.Provider
	engine Engine
}

// style: a configured key goes as a bearer token, for an Ollama behind
// an authenticating proxy; streams are NDJSON.
var style = upstream.Style{KeyHeader: "Authorization", KeyPrefix: "Bearer ", StreamAccept: "application/x-ndjson", ParseError: ParseError}

// Engine holds the settings an edge adds to every request it sends to
// an Ollama it runs itself (its "local" engine). Requests to a remote
// Ollama provider carry none of them: that server's operator decides.
type Engine struct {
	// KeepAlive is Ollama's keep_alive: how long the model stays loaded
	// after the request. Negative keeps it loaded for good; zero leaves
	// Ollama's default (5 minutes).
	KeepAlive time.Duration
	// NumThread is the options.num_thread of every chat request: the
	// CPU threads one generation uses. Zero leaves Ollama's default.
	NumThread int
}

// appendKeepAlive appends ,"keep_alive":... when one is set.
func (e Engine) appendKeepAlive(dst []byte) []byte {
	switch {
	case e.KeepAlive < 0:
		return append(dst, `,"keep_alive":-1`...)
	case e.KeepAlive > 0:
		dst = append(dst, `,"keep_alive":`...)
		return llm.AppendJSONString(dst, e.KeepAlive.String())
	}
	return dst
}

// NewEngine returns an adapter for an Ollama the edge runs itself, at
// base, adding e's settings to every request.
func NewEngine(p table.Provider, e Engine) (*Adapter, error) {
	a, err := New(p)
	if err != nil {
		return nil, err
	}
	a.engine = e
	return a, nil
}

// New returns an adapter for p. p must have passed table validation.
// Ollama needs no credential; a configured key is sent as a bearer
// token for an Ollama behind an authenticating proxy.
func New(p table.Provider) (*Adapter, error) {
	return &Adapter{up: upstream.NewProvider(p, style)}, nil
}

// Close releases idle connections.
func (a *Adapter) Close() { a.up.Close() }

// Do sends req to Ollama, asking for upstreamModel (req.Model when
// empty). Chat and embeddings are supported; legacy completions are not.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	model := req.UpstreamModel(upstreamModel)
	switch req.Op {
	case llm.OpChat:
		return a.chat(ctx, req, model)
	case llm.OpEmbedding:
		return a.embed(ctx, req, model)
	case llm.OpCountTokens:
		return a.countTokens(ctx, req, model)
	}
	return nil, upstream.Unsupported(a.up.ID(), req.Op)
}

func (a *Adapter) chat(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	c, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	if model == "" {
		model = c.Model // req.Chat was decoded just now
	}
	payload, err := encodeChatFor(make([]byte, 0, len(req.Body)+512), c, model, req.Stream, a.engine)
	if err != nil {
		return nil, err
	}
	call, err := a.send(ctx, req, "/api/chat", payload)
	if err != nil {
		return nil, err
	}
	if req.Stream {
		return &llm.Response{Stream: newStream(call, a.up.ID(), model), Upstream: call.Since()}, nil
	}
	b, err := a.readAll(call)
	if err != nil {
		return nil, err
	}
	cc, err := decodeChat(b, model)
	if err != nil {
		return nil, err
	}
	return &llm.Response{Completion: cc, Usage: *cc.Usage, Upstream: call.Since()}, nil
}

// countTokens counts the prompt with the model's own tokenizer and chat
// template. Ollama has no tokenize endpoint; a chat that generates one
// token reports the prompt's tokens in prompt_eval_count, counted in
// full even when its prefix was cached.
func (a *Adapter) countTokens(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	c, err := req.ChatRequest()
	if err != nil {
		return nil, err
	}
	one := *c
	n := 1
	one.MaxTokens, one.MaxCompletionTokens, one.Stream = nil, &n, false
	resp, err := a.chat(ctx, &llm.Request{ID: req.ID, Op: llm.OpChat, Model: req.Model, Chat: &one}, model)
	if err != nil {
		return nil, err
	}
	body := strconv.AppendInt([]byte(`{"input_tokens":`), int64(resp.Usage.PromptTokens), 10)
	return &llm.Response{Body: append(body, '}'), Usage: llm.Usage{PromptTokens: resp.Usage.PromptTokens}, Upstream: resp.Upstream}, nil
}

func (a *Adapter) embed(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	payload, base64, err := encodeEmbedFor(req.Body, model, a.engine)
	if err != nil {
		return nil, err
	}
	call, err := a.send(ctx, req, "/api/embed", payload)
	if err != nil {
		return nil, err
	}
	b, err := a.readAll(call)
	if err != nil {
		return nil, err
	}
	out, usage, err := decodeEmbed(b, model, base64)
	if err != nil {
		return nil, err
	}
	return &llm.Response{Body: out, Usage: usage, Upstream: call.Since()}, nil
}

func (a *Adapter) send(ctx context.Context, req *llm.Request, path string, payload []byte) (*upstream.Call, error) {
	return a.up.Send(ctx, req, req.Stream && req.Op == llm.OpChat, a.up.Base()+path, payload)
}

// readAll reads a non-streamed answer and releases the call.
func (a *Adapter) readAll(call *upstream.Call) ([]byte, error) {
	return a.up.ReadAll(call)
}

// ParseError reads an Ollama error body, {"error":"message"}.
// A proxy in front of Ollama may answer in OpenAI's shape,
// {"error":{"message":"..."}}. What can be read of a body that is not
// JSON is kept; nothing points into b.
func ParseError(b []byte) upstream.ErrorDetail {
	var msg string
	s := jsonscan.New(b)
	if s.Peek() != jsonscan.Object {
		return upstream.ErrorDetail{}
	}
	s.Object(func(k []byte) bool {
		if string(k) != "error" {
			return true
		}
		msg = ""
		switch s.Peek() {
		case jsonscan.String:
			if v := s.Str(); s.Err() == nil {
				msg = v
			}
		case jsonscan.Object:
			s.Object(func(k []byte) bool {
				if string(k) == "message" && s.Peek() == jsonscan.String {
					if v := s.Str(); s.Err() == nil {
						msg = v
					}
				} else {
					s.Skip()
				}
				return true
			})
		default:
			s.Skip()
		}
		return true
	})
	return upstream.ErrorDetail{Message: strings.Clone(msg)}
}

// newID returns prefix followed by 26 random base32 characters. Ollama
// gives answers no ID, and older servers give tool calls none either.
func newID(prefix string) string { return prefix + rand.Text() }

// unixTime reads Ollama's created_at (RFC 3339 with nanoseconds), falling
// back to now.
func unixTime(s string) int64 {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.Unix()
	}
	return time.Now().Unix()
}
