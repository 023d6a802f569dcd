package telemetry

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestOffWithoutEndpoint(t *testing.T) {
	t.Setenv(EnvEndpoint, "")
	t.Setenv(EnvTracesEndpoint, "")
	tr, err := Start(Config{}, "meridian-edge", "n1", "eu")
	if err != nil || tr != nil {
		t.Fatalf("Start with no endpoint = %v, %v; want nil, nil", tr, err)
	}
	if tr.Tracer("x") != nil {
		t.Fatal("a nil Tracing gave a tracer")
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestEnvironmentTurnsItOn(t *testing.T) {
	t.Setenv(EnvTracesEndpoint, "")
	t.Setenv(EnvEndpoint, "http://127.0.0.1:1")
	if !(Config{}).Enabled() {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT did not turn tracing on")
	}
	tr, err := Start(Config{}, "meridian-edge", "n1", "eu")
	if err != nil || tr == nil || tr.Tracer("x") == nil {
		t.Fatalf("Start = %v, %v", tr, err)
	}
	tr.Shutdown(context.Background())
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{OTLPEndpoint: "collector:4318"}, {OTLPEndpoint: "ftp://x"}, {SampleRatio: 1.5}, {SampleRatio: -1}, {BatchTimeout: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (Config{OTLPEndpoint: "https://otel.example:4318", SampleRatio: 0.1}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestTraceparentRoundTrip: what one edge writes into a link header,
// the other continues: same trace, the sender's span as parent.
func TestTraceparentRoundTrip(t *testing.T) {
	if Traceparent(context.Background()) != "" {
		t.Fatal("a context without a span has a traceparent")
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	tp := Traceparent(ctx)
	if tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent %q", tp)
	}
	got := trace.SpanContextFromContext(WithTraceparent(context.Background(), tp))
	if !got.IsRemote() || got.TraceID() != tid || got.SpanID() != sid || !got.IsSampled() {
		t.Fatalf("continued %v", got)
	}
	if TraceID(ctx) != tid.String() {
		t.Fatalf("TraceID %q", TraceID(ctx))
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if trace.SpanContextFromContext(WithTraceparent(context.Background(), bad)).IsValid() {
			t.Errorf("%q was continued", bad)
		}
	}
	h := http.Header{}
	Inject(ctx, h)
	if h.Get("Traceparent") != tp {
		t.Fatalf("injected %v", h)
	}
	if got := trace.SpanContextFromContext(Extract(context.Background(), h)); got.TraceID() != tid {
		t.Fatalf("extracted %v", got)
	}
}
