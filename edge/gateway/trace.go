package gateway

import (
	"context"
	"errors"
	"io"
	"math"
	"strconv"
	"sync"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing, when Config.Tracer is set: one span per routing decision
// ("meridian.route", covering the plan and its attempts up to the first
// byte) and, under it, one client span per attempt, named as the GenAI
// conventions name calls ("chat MODEL"). A peer attempt's span context
// crosses the link (link.Peer sends it as the header's traceparent), so
// the serving edge's spans join the same trace. A streamed attempt's
// span ends when the stream is closed, with the stream's usage. With no
// Tracer none of this runs.

// OpName is the GenAI operation name of op.
func OpName(op llm.Op) string {
	switch op {
	case llm.OpCompletion:
		return telemetry.GenAIOpCompletion
	case llm.OpEmbedding:
		return telemetry.GenAIOpEmbeddings
	}
	return telemetry.GenAIOpChat
}

// RequestAttributes are the GenAI request attributes of req: read from
// its typed chat request when the surface decoded one (the body is not
// read twice), else from its OpenAI-format body, without decoding it
// into types.
func RequestAttributes(req *llm.Request) []attribute.KeyValue {
	kv := []attribute.KeyValue{telemetry.GenAIOperation.String(OpName(req.Op))}
	if c := req.Chat; c != nil {
		switch {
		case c.MaxTokens != nil:
			kv = append(kv, telemetry.GenAIMaxTokens.Int64(int64(*c.MaxTokens)))
		case c.MaxCompletionTokens != nil:
			kv = append(kv, telemetry.GenAIMaxTokens.Int64(int64(*c.MaxCompletionTokens)))
		}
		if c.Temperature != nil {
			kv = append(kv, telemetry.GenAITemperature.Float64(*c.Temperature))
		}
		return kv
	}
	if len(req.Body) == 0 {
		return kv
	}
	var b bodySampling
	b.read(req.Body)
	switch {
	case b.has&hasMaxTokens != 0:
		kv = append(kv, telemetry.GenAIMaxTokens.Int64(b.maxTokens))
	case b.has&hasMaxCompletion != 0:
		kv = append(kv, telemetry.GenAIMaxTokens.Int64(b.maxCompletion))
	}
	if b.has&hasTemperature != 0 {
		kv = append(kv, telemetry.GenAITemperature.Float64(b.temperature))
	}
	return kv
}

// bodySampling is what RequestAttributes reads of an OpenAI-format body
// that was not decoded into types: the first member of each name, when
// it is a number. A non-integer token count is truncated.
type bodySampling struct {
	maxTokens, maxCompletion int64
	temperature              float64
	has, seen                uint8
}

const (
	hasMaxTokens = 1 << iota
	hasMaxCompletion
	hasTemperature
	seenAll = hasMaxTokens | hasMaxCompletion | hasTemperature
)

// read skims the body's top level once (jsonscan.EachMember), stopping when all
// three names have been met.
func (b *bodySampling) read(body []byte) {
	jsonscan.EachMember(body, func(k, v []byte) bool {
		var bit uint8
		switch string(k) {
		case "max_tokens":
			bit = hasMaxTokens
		case "max_completion_tokens":
			bit = hasMaxCompletion
		case "temperature":
			bit = hasTemperature
		default:
			return true
		}
		if b.seen&bit != 0 {
			return true
		}
		b.seen |= bit
		s := jsonscan.New(v)
		if s.Peek() != jsonscan.Number {
			return b.seen != seenAll
		}
		switch bit {
		case hasMaxTokens:
			b.maxTokens = truncInt(s.Raw())
		case hasMaxCompletion:
			b.maxCompletion = truncInt(s.Raw())
		default:
			b.temperature = s.Float()
		}
		if s.End() == nil {
			b.has |= bit
		}
		return b.seen != seenAll
	})
}

// truncInt reads a JSON number as an integer: exactly when it is one,
// else truncated towards zero and clamped to int64.
func truncInt(raw []byte) int64 {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n
	}
	f, _ := strconv.ParseFloat(string(raw), 64)
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f < math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

// answerModel returns the first "model" of an answer's top level when
// it is a non-empty string. It skims (jsonscan.EachMember): an embeddings answer
// names its model after the vectors.
func answerModel(body []byte) string {
	model := ""
	jsonscan.EachMember(body, func(k, v []byte) bool {
		if string(k) != "model" {
			return true
		}
		if s := jsonscan.New(v); s.Peek() == jsonscan.String {
			if m := s.Str(); s.End() == nil {
				model = m
			}
		}
		return false
	})
	return model
}

// doTraced is DoIn inside a routing span.
func (g *Gateway) doTraced(ctx context.Context, snap Snapshot, req *llm.Request) (*Result, error) {
	ctx, span := g.cfg.Tracer.Start(ctx, "meridian.route", trace.WithAttributes(
		telemetry.GenAIRequestModel.String(req.Model), telemetry.MeridianRequestID.String(req.ID)))
	defer span.End()
	res, err := g.doIn(ctx, snap, req)
	r := &res.Route
	span.SetAttributes(telemetry.MeridianStrategy.String(r.Strategy), telemetry.MeridianCandidates.Int(res.candidates),
		telemetry.MeridianAttempt.Int(r.Attempt))
	if r.Target != "" {
		span.SetAttributes(telemetry.MeridianTarget.String(r.Target), telemetry.MeridianTargetKind.String(r.Kind),
			telemetry.MeridianReason.String(r.Reason))
	}
	if err != nil {
		e := llm.AsError(err)
		reason := e.Code
		if reason == "" {
			reason = e.Type
		}
		span.SetAttributes(telemetry.MeridianReason.String(reason), telemetry.ErrorType.String(e.Type))
		span.SetStatus(codes.Error, e.Message)
	}
	return res, err
}

// startAttempt starts the client span of one attempt at ch.
func (g *Gateway) startAttempt(ctx context.Context, st *state, ch *router.Choice, req *llm.Request) (context.Context, trace.Span) {
	provider := telemetry.ProviderMeridian
	switch ch.Kind {
	case router.KindProvider:
		if t := st.providers[ch.ID]; t != nil {
			provider = string(t.spec.Kind)
		}
	case router.KindLocal:
		provider = string(table.KindOllama)
	}
	kv := append(RequestAttributes(req),
		telemetry.GenAIProvider.String(provider), telemetry.GenAISystem.String(provider),
		telemetry.GenAIRequestModel.String(ch.UpstreamModel),
		telemetry.MeridianTarget.String(ch.Key), telemetry.MeridianTargetKind.String(ch.Kind.String()))
	return g.cfg.Tracer.Start(ctx, OpName(req.Op)+" "+ch.UpstreamModel, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kv...))
}

// endAttempt ends an attempt's span, or, for a stream, wraps
// resp.Stream so that closing the stream ends it.
func endAttempt(span trace.Span, ch *router.Choice, resp *llm.Response, err error) {
	if err != nil {
		e := llm.AsError(err)
		span.SetAttributes(telemetry.ErrorType.String(e.Type), telemetry.HTTPStatus.Int(e.Status))
		span.SetStatus(codes.Error, e.Message)
		span.End()
		return
	}
	model := ch.UpstreamModel
	switch {
	case resp.Completion != nil && resp.Completion.Model != "":
		model = resp.Completion.Model
	case len(resp.Body) > 0:
		if m := answerModel(resp.Body); m != "" {
			model = m
		}
	}
	span.SetAttributes(telemetry.GenAIResponseModel.String(model))
	if resp.Stream != nil {
		resp.Stream = &tracedStream{Stream: resp.Stream, span: span}
		return
	}
	usageAttributes(span, resp.Usage)
	span.End()
}

func usageAttributes(span trace.Span, u llm.Usage) {
	span.SetAttributes(telemetry.GenAIInputTokens.Int(u.PromptTokens), telemetry.GenAIOutputTokens.Int(u.CompletionTokens))
}

// tracedStream ends its attempt's span when closed, with the usage the
// stream reported and whether it ended cleanly.
type tracedStream struct {
	llm.Stream
	span   trace.Span
	chunks int
	err    error
	once   sync.Once
}

func (s *tracedStream) Next() (*llm.Chunk, error) {
	c, err := s.Stream.Next()
	if err == nil {
		s.chunks++
	} else if s.err == nil {
		s.err = err
	}
	return c, err
}

// Buffered passes the inner stream's, so relays coalesce as before.
func (s *tracedStream) Buffered() int {
	if b, ok := s.Stream.(llm.Buffered); ok {
		return b.Buffered()
	}
	return 0
}

func (s *tracedStream) Close() error {
	err := s.Stream.Close()
	s.once.Do(func() {
		if u, ok := s.Stream.Usage(); ok {
			usageAttributes(s.span, u)
		}
		s.span.SetAttributes(attribute.Int("meridian.stream.chunks", s.chunks))
		if s.err != nil && !errors.Is(s.err, io.EOF) {
			e := llm.AsError(s.err)
			s.span.SetAttributes(telemetry.ErrorType.String(e.Type))
			s.span.SetStatus(codes.Error, e.Message)
		}
		s.span.End()
	})
	return err
}
