package gateway

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/promtest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestBreakerMetric: each target's breaker state is exposed as
// meridian_breaker_state; two failures (the test gateway's threshold)
// open a breaker.
func TestBreakerMetric(t *testing.T) {
	a, b := &fake{do: fail(503, true)}, &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	reg := prometheus.NewRegistry()
	if err := reg.Register(breakerCollector{g}); err != nil {
		t.Fatal(err)
	}
	check := func(a float64) {
		t.Helper()
		got := promtest.Values(t, reg, "meridian_breaker_state")
		want := map[string]float64{`target="provider/a"`: a, `target="provider/b"`: 0}
		if !maps.Equal(got, want) {
			t.Fatalf("meridian_breaker_state %v, want %v", got, want)
		}
	}
	check(0)
	for range 2 {
		if _, err := g.Do(context.Background(), &llm.Request{Model: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	check(2)
}

// TestNewRegistersBreakerMetric: New registers the breaker collector on
// its Config's Registerer; a second gateway on the same registry is
// logged, not a panic.
func TestNewRegistersBreakerMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	New(cfg)
	if err := reg.Register(breakerCollector{}); err == nil {
		t.Fatal("New did not register meridian_breaker_state")
	}
	New(cfg) // must not panic
}
