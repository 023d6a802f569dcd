// Package telemetry turns OpenTelemetry tracing on for a Meridian binary
// when an OTLP endpoint is configured, and carries W3C trace context
// across the places Meridian hands a request on: HTTP headers in, QUIC
// link headers between edges.
//
// Off is the default and costs nothing: Start returns a nil *Tracing,
// whose Tracer is nil, and callers test for a nil tracer before they
// make a span, so no exporter runs and nothing is allocated. This
// package must never export spans anywhere but the configured endpoint,
// and never put a secret (a key, a prompt) in an attribute.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config says where spans go. The zero Config is off unless the
// environment names an endpoint (EnvEndpoint, EnvTracesEndpoint).
type Config struct {
	// OTLPEndpoint is the OTLP/HTTP collector's base URL, such as
	// "http://otel-collector:4318"; spans are posted to its /v1/traces
	// unless the URL has a path of its own. Empty means the environment
	// decides (OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); with neither, tracing is off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of new traces recorded, 0 to 1; a trace
	// a client or peer started keeps its own decision. Zero means 1:
	// every trace.
	SampleRatio float64 `yaml:"sample_ratio"`
	// BatchTimeout is the longest a finished span waits before it is
	// sent. Zero means 5s.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
}

// Environment variables the OTLP exporter reads, as the OpenTelemetry
// specification names them.
const (
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// Enabled reports whether spans are exported: an endpoint is configured
// or named by the environment.
func (c Config) Enabled() bool {
	return c.OTLPEndpoint != "" || os.Getenv(EnvEndpoint) != "" || os.Getenv(EnvTracesEndpoint) != ""
}

// Validate checks the endpoint and ratio.
func (c Config) Validate() error {
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(c.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("telemetry.otlp_endpoint: want an http:// or https:// URL, not %q", c.OTLPEndpoint)
		}
	}
	if !(c.SampleRatio >= 0 && c.SampleRatio <= 1) {
		return fmt.Errorf("telemetry.sample_ratio: must be between 0 and 1, not %v", c.SampleRatio)
	}
	if c.BatchTimeout < 0 {
		return errors.New("telemetry.batch_timeout: must not be negative")
	}
	return nil
}

// Tracing is a running tracer provider. A nil *Tracing is tracing off.
type Tracing struct {
	tp *sdktrace.TracerProvider
}

// Start builds the tracer provider for a binary (service, such as
// "meridian-edge") on a node, or returns nil when cfg is off. Spans are
// batched and posted in the background; Shutdown flushes them.
func Start(cfg Config, service, node, region string) (*Tracing, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var opts []otlptracehttp.Option
	if cfg.OTLPEndpoint != "" {
		u, _ := url.Parse(cfg.OTLPEndpoint)
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	res, err := resource.New(context.Background(), resource.WithAttributes(
		attribute.String("service.name", service),
		attribute.String("service.instance.id", node),
		attribute.String("cloud.region", region),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	batch := cfg.BatchTimeout
	if batch == 0 {
		batch = 5 * time.Second
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(batch)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &Tracing{tp: tp}, nil
}

// Tracer returns the named tracer, or nil when tracing is off: callers
// make no span for a nil tracer.
func (t *Tracing) Tracer(name string) trace.Tracer {
	if t == nil {
		return nil
	}
	return t.tp.Tracer(name)
}

// Shutdown sends the spans still batched and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// propagator is W3C trace context: traceparent and tracestate.
var propagator = propagation.TraceContext{}

// Extract returns ctx continuing the trace an incoming request's W3C
// headers name, or ctx itself when they name none.
func Extract(ctx context.Context, h http.Header) context.Context {
	if h.Get("Traceparent") == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject writes the W3C headers of the span in ctx into h, if any.
func Inject(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// Traceparent renders the span in ctx as a W3C traceparent, "" when ctx
// carries none (tracing off costs this one lookup).
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceparent returns ctx continuing the trace a traceparent from a
// peer names; ctx itself for "" or a malformed one.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// TraceID returns the ID of the trace ctx belongs to, "" when none, for
// log lines that join traces.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}

// Attribute keys of the OpenTelemetry GenAI semantic conventions, and
// Meridian's own.
const (
	GenAIOperation     = attribute.Key("gen_ai.operation.name")
	GenAISystem        = attribute.Key("gen_ai.system")
	GenAIProvider      = attribute.Key("gen_ai.provider.name")
	GenAIRequestModel  = attribute.Key("gen_ai.request.model")
	GenAIResponseModel = attribute.Key("gen_ai.response.model")
	GenAIInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	GenAIOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	GenAIMaxTokens     = attribute.Key("gen_ai.request.max_tokens")
	GenAITemperature   = attribute.Key("gen_ai.request.temperature")
	MeridianRequestID  = attribute.Key("meridian.request_id")
	MeridianTenant     = attribute.Key("meridian.tenant")
	MeridianNode       = attribute.Key("meridian.node")
	MeridianVia        = attribute.Key("meridian.via")
	MeridianTarget     = attribute.Key("meridian.route.target")
	MeridianTargetKind = attribute.Key("meridian.route.kind")
	MeridianStrategy   = attribute.Key("meridian.route.strategy")
	MeridianCandidates = attribute.Key("meridian.route.candidates")
	MeridianReason     = attribute.Key("meridian.route.reason")
	MeridianAttempt    = attribute.Key("meridian.route.attempt")
	MeridianStatus     = attribute.Key("meridian.status")
	HTTPMethod         = attribute.Key("http.request.method")
	HTTPRoute          = attribute.Key("http.route")
	HTTPStatus         = attribute.Key("http.response.status_code")
	ErrorType          = attribute.Key("error.type")
	GenAIOpChat        = "chat"
	GenAIOpCompletion  = "text_completion"
	GenAIOpEmbeddings  = "embeddings"
	ProviderMeridian   = "meridian"
)
