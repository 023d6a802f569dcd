// Package openai is the adapter for OpenAI-compatible upstreams: OpenAI
// itself and every server that copies its API (Mistral, DeepSeek, Groq,
// Together, vLLM, TGI, Ollama's /v1, the project's mock provider).
//
// A request that arrived in OpenAI's format is forwarded byte for byte,
// with only its model name changed, so fields Meridian does not know still
// reach the upstream. Responses come back unparsed except for the few
// fields the gateway needs (usage, the end of a stream).
//
// Error messages built here never contain the provider key or base URL.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider/upstream"
	"github.com/meridian-mesh/meridian/edge/sse"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Adapter talks to one OpenAI-compatible provider.
type Adapter struct {
	up  upstream.Provider
	url func(base string, op llm.Op, model string) string
	// responses: the upstream speaks the Responses API (its preset
	// says so), so Responses clients' requests pass through.
	responses bool
}

// Style is how OpenAI itself takes requests: a Bearer key, SSE streams.
var Style = upstream.Style{KeyHeader: "Authorization", KeyPrefix: "Bearer ", StreamAccept: "text/event-stream", ParseError: ParseError}

// New returns an adapter for p. p must have passed table validation.
func New(p table.Provider) (*Adapter, error) {
	return &Adapter{up: upstream.NewProvider(p, Style), url: baseURL, responses: table.SpeaksResponses(p.Preset)}, nil
}

// NewWith returns an adapter for a server that speaks OpenAI's format
// with another style of auth or errors, at other URLs: url returns the
// endpoint of an operation on model, under base (no trailing slash).
func NewWith(p table.Provider, s upstream.Style, url func(base string, op llm.Op, model string) string) *Adapter {
	return &Adapter{up: upstream.NewProvider(p, s), url: url}
}

func baseURL(base string, op llm.Op, _ string) string { return base + Path(op) }

// Close releases idle connections.
func (a *Adapter) Close() { a.up.Close() }

// Path is the path of op under an OpenAI base URL, such as
// "/chat/completions".
func Path(op llm.Op) string {
	switch op {
	case llm.OpCompletion:
		return "/completions"
	case llm.OpEmbedding:
		return "/embeddings"
	}
	return "/chat/completions"
}

// body returns the upstream request body: the client's own bytes with the
// model renamed and, for streams, usage reporting switched on so the
// gateway can count tokens even when the client did not ask for them.
func body(req *llm.Request, upstreamModel string) (b []byte, stripUsage bool, err error) {
	b = req.Body
	if b == nil {
		if req.Chat == nil {
			return nil, false, errors.New("request has neither a body nor a chat request")
		}
		if b, err = json.Marshal(req.Chat); err != nil {
			return nil, false, err
		}
		if req.Model != req.Chat.Model && upstreamModel == "" {
			upstreamModel = req.Model
		}
	}
	if upstreamModel != "" && upstreamModel != req.Model {
		if b, err = jsonscan.Set(b, jsonscan.AppendString(nil, upstreamModel), "model"); err != nil {
			return nil, false, err
		}
	}
	if req.Stream && req.Op != llm.OpEmbedding && (!req.IncludeUsage || req.Body == nil) {
		out, err := jsonscan.Set(b, []byte("true"), "stream_options", "include_usage")
		if errors.Is(err, jsonscan.ErrPath) {
			// stream_options is null (or another scalar): it becomes
			// the object. An array stays an error.
			if v, _ := jsonscan.Member(b, "stream_options"); len(v) == 0 || v[0] != '[' {
				out, err = jsonscan.Set(b, []byte(`{"include_usage":true}`), "stream_options")
			}
		}
		if err != nil {
			return nil, false, err
		}
		b = out
		stripUsage = !req.IncludeUsage
	}
	return b, stripUsage, nil
}

// Do implements provider.Provider.
func (a *Adapter) Do(ctx context.Context, req *llm.Request, upstreamModel string) (*llm.Response, error) {
	if req.Op == llm.OpCountTokens {
		return nil, upstream.Unsupported(a.up.ID(), req.Op)
	}
	if a.responses && req.Op == llm.OpChat && req.NativeFormat == llm.FormatResponses && req.Native != nil {
		return a.passResponses(ctx, req, req.UpstreamModel(upstreamModel))
	}
	payload, stripUsage, err := body(req, upstreamModel)
	if err != nil {
		return nil, &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "request could not be encoded for the upstream", Cause: err}
	}
	call, err := a.up.Send(ctx, req, req.Stream, a.url(a.up.Base(), req.Op, req.UpstreamModel(upstreamModel)), payload)
	if err != nil {
		return nil, err
	}
	if !req.Stream {
		b, err := a.up.ReadAll(call)
		if err != nil {
			return nil, err
		}
		out := &llm.Response{Body: b, Upstream: call.Since()}
		// Skimmed to the usage, which comes last: an embeddings answer
		// holds thousands of numbers before it.
		if u, ok := jsonscan.Member(b, "usage"); ok && len(u) > 0 && u[0] == '{' {
			out.Usage = readUsage(jsonscan.New(u))
		}
		return out, nil
	}
	return &llm.Response{
		Stream:   &stream{call: call, r: sse.NewReader(call.Resp.Body), stripUsage: stripUsage},
		Upstream: call.Since(),
	}, nil
}

// ParseError reads an OpenAI-format error body.
func ParseError(b []byte) upstream.ErrorDetail {
	var d upstream.ErrorDetail
	s := jsonscan.New(b)
	s.Object(func(k []byte) bool {
		if string(k) != "error" {
			return true
		}
		switch s.Peek() {
		case jsonscan.Object:
			readErrorObject(s, &d)
		case jsonscan.String:
			d.Message = s.Str()
		}
		return false // the first "error" is the one
	})
	return d
}

// readErrorObject reads OpenAI's error object: message, code, param and
// type, each when it is a string.
func readErrorObject(s *jsonscan.Scanner, d *upstream.ErrorDetail) {
	var seen uint8
	s.Object(func(k []byte) bool {
		var f *string
		var bit uint8
		switch string(k) {
		case "message":
			f, bit = &d.Message, 1
		case "code":
			f, bit = &d.Code, 2
		case "param":
			f, bit = &d.Param, 4
		case "type":
			f, bit = &d.Type, 8
		default:
			return true
		}
		if seen&bit == 0 {
			seen |= bit
			if s.Peek() == jsonscan.String {
				*f = s.Str()
			}
		}
		return true
	})
}

// answerUsage reads the usage of a chat answer or stream chunk (ok when
// it has a usage object) and how many choices it has.
func answerUsage(b []byte) (u llm.Usage, ok bool, choices int) {
	var seenUsage, seenChoices bool
	s := jsonscan.New(b)
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "usage":
			if !seenUsage && s.Peek() == jsonscan.Object {
				u, ok = readUsage(s), true
			}
			seenUsage = true
		case "choices":
			if !seenChoices && s.Peek() == jsonscan.Array {
				s.Array(func(int) bool { s.Skip(); choices++; return true })
			}
			seenChoices = true
		}
		return true
	})
	return u, ok, choices
}

var (
	// usageNull ends every chunk of a stream whose usage reporting is on.
	usageNull = []byte(`,"usage":null}`)
	usageKey  = []byte(`"usage"`)
	errorKey  = []byte(`{"error"`)
)

// stream reads an OpenAI-format SSE stream.
type stream struct {
	call       *upstream.Call
	r          *sse.Reader
	stripUsage bool
	chunk      llm.Chunk

	usage    llm.Usage
	hasUsage bool
	done     bool
}

var (
	_ llm.Stream   = (*stream)(nil)
	_ llm.Buffered = (*stream)(nil)
)

// Next implements llm.Stream.
func (s *stream) Next() (*llm.Chunk, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		ev, err := s.r.Next()
		if err != nil {
			return nil, s.call.ReadErr(err)
		}
		s.call.Touch()
		if len(ev.Data) == 6 && string(ev.Data) == "[DONE]" {
			s.done = true
			return nil, io.EOF
		}
		data := ev.Data
		if bytes.HasPrefix(data, errorKey) {
			// An error the upstream reported mid-stream.
			d := ParseError(data)
			return nil, &llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Code: d.Code,
				Message: "upstream provider reported an error mid-stream: " + d.Message}
		}
		if bytes.HasSuffix(data, usageNull) {
			if s.stripUsage {
				// Usage reporting was switched on for the gateway, not
				// the client: give the client the chunk it would have had.
				data = append(data[:len(data)-len(usageNull)], '}')
			}
		} else if !bytes.Contains(data, usageKey) {
			// The common chunk: nothing to read.
		} else if u, ok, choices := answerUsage(data); ok {
			s.usage, s.hasUsage = u, true
			if s.stripUsage && choices == 0 {
				continue // the client did not ask for the usage chunk
			}
		}
		s.chunk.SetRaw(data)
		return &s.chunk, nil
	}
}

// Buffered implements llm.Buffered.
func (s *stream) Buffered() int { return s.r.Buffered() }

// Usage implements llm.Stream.
func (s *stream) Usage() (llm.Usage, bool) { return s.usage, s.hasUsage }

// Close implements llm.Stream. After [DONE] only the body's end is left,
// so the connection is drained back to the pool.
func (s *stream) Close() error {
	s.call.Close(s.done)
	return nil
}
