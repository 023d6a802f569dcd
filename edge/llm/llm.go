// Package llm holds Meridian's canonical request, stream and error types:
// the one shape every inbound surface decodes into and every provider
// adapter encodes from.
//
// OpenAI's chat completions format is the lingua franca. A request that
// arrived on the OpenAI surface keeps its original body in Request.Body, so
// an OpenAI-compatible upstream receives every field the client sent,
// including ones Meridian does not know. Stream events carry OpenAI-format
// chunk JSON for the same reason.
//
// This package does no I/O.
package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ChatCompletion returns the non-streamed chat answer, decoding Body
// (in one jsonscan pass, with encoding/json's result) when the adapter
// returned OpenAI-format bytes. The answer's strings point into Body.
func (r *Response) ChatCompletion() (*ChatCompletion, error) {
	if r.Completion != nil {
		return r.Completion, nil
	}
	var c ChatCompletion
	if err := decodeCompletion(r.Body, &c); err != nil {
		return nil, errNotCompletion(err)
	}
	r.Completion = &c
	return r.Completion, nil
}

// Op is the kind of work a request asks for.
type Op uint8

// Operations.
const (
	OpChat       Op = iota + 1 // chat completions
	OpCompletion               // legacy text completions
	OpEmbedding                // embeddings
	// OpCountTokens asks a target how many input tokens Chat would
	// take, without generating: Anthropic's /v1/messages/count_tokens.
	// A target that can count answers Body {"input_tokens":N} with
	// Usage.PromptTokens N; one that cannot refuses with
	// CodeUnsupported, and the surface estimates instead. It never
	// crosses a link.
	OpCountTokens
)

// CodeUnsupported is the code of an error a target answers for an
// operation it does not offer.
const CodeUnsupported = "unsupported_operation"

func (o Op) String() string {
	switch o {
	case OpChat:
		return "chat"
	case OpCompletion:
		return "completion"
	case OpEmbedding:
		return "embedding"
	case OpCountTokens:
		return "count_tokens"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Request is one canonical request.
type Request struct {
	// ID is the request ID, from x-request-id or generated.
	ID string
	// Op is what the request asks for.
	Op Op
	// Model is the model name the client asked for.
	Model string
	// Stream asks for a server-sent event stream.
	Stream bool
	// IncludeUsage is stream_options.include_usage: the client wants a
	// final usage chunk.
	IncludeUsage bool
	// Chat is the typed chat request. Surfaces that translate from
	// another format fill it; for OpenAI-format requests it is decoded
	// from Body on first use (see ChatRequest), because the OpenAI path
	// never needs it.
	Chat *ChatRequest
	// AllowedRegions, when set, are the only regions the request may be
	// served in: the residency policy of the edge that routed it first,
	// carried across a link so the serving edge keeps to it.
	AllowedRegions []string
	// Body is the request as the client sent it, in OpenAI's format.
	// Adapters for OpenAI-compatible upstreams forward it with only the
	// model name changed, so unknown fields pass through.
	Body []byte
	// Native is the request as the client sent it in another format,
	// NativeFormat (Anthropic's, or OpenAI's Responses). An adapter whose upstream speaks that
	// format forwards it with only the model name changed, and answers
	// in it (Response.Format), so neither side is translated; any other
	// adapter translates Chat. Native never crosses a link.
	Native       []byte
	NativeFormat Format
}

// ChatRequest returns the typed chat request, decoding Body if needed
// (DecodeChatRequest). A body that does not fit the types gives a 400
// naming the field.
func (r *Request) ChatRequest() (*ChatRequest, error) {
	if r.Chat != nil {
		return r.Chat, nil
	}
	c, err := DecodeChatRequest(r.Body)
	if err != nil {
		return nil, err
	}
	r.Chat = c
	return r.Chat, nil
}

// UpstreamModel is the model name to ask a target for: the route's
// upstream name when it sets one, else the client's, else the typed
// chat request's.
func (r *Request) UpstreamModel(upstream string) string {
	switch {
	case upstream != "":
		return upstream
	case r.Model != "":
		return r.Model
	case r.Chat != nil:
		return r.Chat.Model
	}
	return ""
}

// ChatRequest is the typed part of a chat completions request. Fields
// Meridian does not interpret are kept as raw JSON.
type ChatRequest struct {
	Model               string          `json:"model"`
	Messages            []Message       `json:"messages"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *StreamOptions  `json:"stream_options,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Stop                json.RawMessage `json:"stop,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	Tools               []Tool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ResponseFormat      json.RawMessage `json:"response_format,omitempty"`
	Logprobs            *bool           `json:"logprobs,omitempty"`
	TopLogprobs         *int            `json:"top_logprobs,omitempty"`
	User                string          `json:"user,omitempty"`

	// TopK is Anthropic's, Gemini's and Ollama's top_k. OpenAI has no
	// such field, so it is never sent in OpenAI's format.
	TopK *int `json:"-"`

	// Extra holds the top-level fields of the client's body that its
	// decoder (DecodeChatRequest for OpenAI's format, the Anthropic
	// surface's for Anthropic's) does not read (frequency_penalty, …),
	// in body order, as they came; HasExtra says the decoder filled it.
	// Who needs those fields (the cache key) reads them here instead of
	// reading the body again.
	Extra    []Field `json:"-"`
	HasExtra bool    `json:"-"`
}

// Field is one top-level field of a JSON body: its name and its value's
// bytes as they came.
type Field struct {
	Name string
	Raw  json.RawMessage
}

// StreamOptions is OpenAI's stream_options object.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Message is one chat message. Content is kept raw: it is a string, an
// array of content parts, or null.
type Message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// Tool is a tool the model may call. Only "function" tools translate to
// other formats.
type Tool struct {
	Type     string       `json:"type"`
	Function *FunctionDef `json:"function,omitempty"`
}

// ToolCall is a call the model made.
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// Usage counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Error types, as OpenAI names them. Other surfaces map them to their own.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	// TypePermission is a request a policy forbids, such as data
	// residency: a 403.
	TypePermission = "permission_error"
	TypeNotFound   = "not_found_error"
	TypeRateLimit  = "rate_limit_error"
	TypeUpstream   = "upstream_error"
	TypeTimeout    = "timeout_error"
	TypeServer     = "server_error"
	TypeOverloaded = "overloaded_error"
)

// Error is a request failure with everything a surface needs to report it
// in its own format. Message is safe to show a client: it never holds a
// provider key or an upstream URL.
type Error struct {
	// Status is the HTTP status the client receives.
	Status int
	// Type is one of the Type constants.
	Type string
	// Code is a machine-readable code such as "model_not_found".
	Code string
	// Param names the request field at fault, if one is.
	Param string
	// Message is for humans.
	Message string
	// RetryAfter is passed to the client as Retry-After, when set.
	RetryAfter time.Duration
	// Retryable means another target may succeed where this one failed:
	// connection errors, timeouts, 429 and 5xx from an upstream.
	Retryable bool
	// Cause is the underlying error, for logs only. It may name hosts and
	// must never reach a client.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Type, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// AsError returns err as an *Error, wrapping anything else as a 500 whose
// message says nothing about its cause.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Message: "internal error", Cause: err}
}

// Errorf builds an invalid-request error that names the field at fault.
func Errorf(status int, typ, param, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Param: param, Message: fmt.Sprintf(format, args...)}
}

// ErrStreamCut reports an upstream stream that ended before its end marker.
var ErrStreamCut = errors.New("upstream stream ended before completion")

// Stream is a streamed chat answer, as canonical chunks.
//
// Adapters whose upstream speaks OpenAI's format hand over each chunk's
// JSON in Chunk.Raw, unparsed; translating adapters fill the typed
// fields. Translating adapters end with a chunk that has no choices and
// carries Usage; the OpenAI surface passes it on only to clients that
// asked for usage.
type Stream interface {
	// Next returns the next chunk, valid until the next call. It returns
	// io.EOF after the upstream's end marker, ErrStreamCut (wrapped) when
	// the upstream stopped early, an *Error for an error the upstream
	// reported mid-stream or a timeout, and the context's error when the
	// client went away.
	Next() (*Chunk, error)
	// Usage returns the token counts the upstream reported, once it has
	// reported them; ok is false before that or when it never does.
	Usage() (u Usage, ok bool)
	// Close releases the stream and cancels the upstream request if it is
	// still running. It is safe to call more than once.
	Close() error
}

// Buffered is implemented by streams that can tell whether their next
// chunk is already in memory. A relay flushes to its client only when
// Buffered reports zero, so a burst of chunks costs one write, not one
// per chunk, and a lone chunk is never held back.
type Buffered interface {
	Buffered() int
}

// Response is what a target returns for a request.
type Response struct {
	// Body is a non-streamed response in OpenAI's format, as an
	// OpenAI-compatible upstream sent it (and, for embeddings, as every
	// adapter returns them).
	Body []byte
	// Completion is a non-streamed chat answer from a translating
	// adapter; it is set instead of Body.
	Completion *ChatCompletion
	// Stream is set instead of Body for streamed requests.
	Stream Stream
	// Usage is the token count of a non-streamed response.
	Usage Usage
	// Upstream is the time spent waiting on the target: until the whole
	// body for non-streamed responses, until response headers for streams.
	Upstream time.Duration
	// Format is the format of Body and of the stream's chunks when it is
	// the request's NativeFormat, passed through; empty means OpenAI's
	// (or a translating adapter's typed answer).
	Format Format
}
