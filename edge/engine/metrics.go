package engine

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics puts the engine's load on reg: whether Ollama answers,
// the requests running and queued, the generation speed, the restarts,
// and whether each model placed at start is ready.
func registerMetrics(reg prometheus.Registerer, e *Engine, models []string) error {
	gauge := func(name, help string, f func(Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(e.Stats()) })
	}
	cs := []prometheus.Collector{
		gauge("meridian_local_up", "1 when the local Ollama answers.", func(s Stats) float64 {
			if s.Up {
				return 1
			}
			return 0
		}),
		gauge("meridian_local_running", "Requests admitted to the local engine and not finished.", func(s Stats) float64 { return float64(s.Running) }),
		gauge("meridian_local_queue_depth", "Admitted local requests waiting for a free slot.", func(s Stats) float64 { return float64(s.Queued) }),
		gauge("meridian_local_tokens_per_second", "Moving average of local generation speed per request.", func(s Stats) float64 { return s.TokensPerSecond }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_local_restarts_total", Help: "Restarts of the supervised Ollama."},
			func() float64 { return float64(e.Stats().Restarts) }),
	}
	for _, m := range models {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_local_model_ready", Help: "1 when a placed model is loaded and serving.",
			ConstLabels: prometheus.Labels{"model": m},
		}, func() float64 {
			if e.Models()[m].State == StateReady {
				return 1
			}
			return 0
		}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("local engine: metrics: %w", err)
		}
	}
	return nil
}
