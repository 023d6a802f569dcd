package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Spans, when Config.Tracer is set: a server span per API request, which
// continues the client's W3C trace headers, and a server span per request
// a peer forwarded here, which continues the forwarding edge's trace
// (the link carries its traceparent). The gateway's routing and attempt
// spans nest under them. With no Tracer none of this runs.

// startSpan starts the request's server span and returns r carrying it.
func (c *Config) startSpan(r *http.Request) (*http.Request, trace.Span) {
	ctx := telemetry.Extract(r.Context(), r.Header)
	ctx, span := c.Tracer.Start(ctx, r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		telemetry.HTTPMethod.String(r.Method), telemetry.HTTPRoute.String(r.URL.Path),
		telemetry.MeridianRequestID.String(r.Header.Get(HeaderRequestID)), telemetry.MeridianNode.String(c.Node)))
	return r.WithContext(ctx), span
}

// endSpan ends a request's server span with what its outcome says.
func (x *exchange) endSpan(span trace.Span) {
	o := &x.o
	kv := make([]attribute.KeyValue, 0, 12)
	kv = append(kv, telemetry.MeridianStatus.String(o.Status), telemetry.MeridianTenant.String(o.Tenant))
	if code, err := strconv.Atoi(o.Status); err == nil {
		kv = append(kv, telemetry.HTTPStatus.Int(code))
	}
	if x.req != nil {
		kv = append(kv, gateway.RequestAttributes(x.req)...)
		kv = append(kv, telemetry.GenAIRequestModel.String(x.req.Model))
	}
	if x.res != nil && x.res.Route.Target != "" {
		kv = append(kv, telemetry.MeridianTarget.String(x.res.Route.Target), telemetry.MeridianTargetKind.String(x.res.Route.Kind),
			telemetry.GenAIResponseModel.String(x.res.Route.UpstreamModel))
	}
	if o.HasUsage {
		kv = append(kv, telemetry.GenAIInputTokens.Int(o.Usage.PromptTokens), telemetry.GenAIOutputTokens.Int(o.Usage.CompletionTokens))
	}
	span.SetAttributes(kv...)
	if o.Err != nil && o.Status != "499" {
		e := llm.AsError(o.Err)
		span.SetAttributes(telemetry.ErrorType.String(e.Type))
		span.SetStatus(codes.Error, e.Message)
	}
	span.End()
}

// startForwarded starts the server span of a request a peer forwarded
// here; ctx carries the peer's trace context from the link.
func (c *Config) startForwarded(ctx context.Context, via string, req *llm.Request) (context.Context, trace.Span) {
	kv := append(gateway.RequestAttributes(req), telemetry.GenAIRequestModel.String(req.Model),
		telemetry.MeridianRequestID.String(req.ID), telemetry.MeridianVia.String(via), telemetry.MeridianNode.String(c.Node))
	return c.Tracer.Start(ctx, "meridian.link.serve "+req.Model, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(kv...))
}
