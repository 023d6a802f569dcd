package engine

import (
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/shared/testkit/promtest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestEngineRegistersItsMetrics: the engine puts its gauges on the
// Registerer in its Config, under the names ops/ alert rules read, and a
// registry that already holds them is an error, not a panic.
func TestEngineRegistersItsMetrics(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URL, cfg.DataDir = true, "http://127.0.0.1:1", t.TempDir()
	cfg.Models = []Model{{Name: "a", GGUF: "a.gguf"}}
	cfg.Registerer = reg
	e, err := New(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	e.setState("a", StateReady)
	for name, want := range map[string]map[string]float64{
		"meridian_local_model_ready":       {`model="a"`: 1},
		"meridian_local_up":                {"": 0},
		"meridian_local_running":           {"": 0},
		"meridian_local_queue_depth":       {"": 0},
		"meridian_local_tokens_per_second": {"": 0},
		"meridian_local_restarts_total":    {"": 0},
	} {
		if got := promtest.Values(t, reg, name); !maps.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}

	if _, err := New(cfg, quiet); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("a second engine on the same registry: %v; want a metrics error", err)
	}
	cfg.Registerer = nil
	if _, err := New(cfg, quiet); err != nil {
		t.Fatalf("no Registerer: %v", err)
	}
}
