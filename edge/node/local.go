package node

import (
	"fmt"

	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/prometheus/client_golang/prometheus"
)

// newProvider builds the gateway's targets: the node's own engine for
// kind local, an adapter for everything else.
func (n *Node) newProvider(p table.Provider) (provider.Provider, error) {
	if p.Kind != table.KindLocal {
		return provider.New(p)
	}
	if n.engine == nil {
		return nil, fmt.Errorf("provider %q is the local engine, but this node runs none", p.ID)
	}
	return n.engine, nil
}

// LocalStatus is the local engine's part of /readyz.
type LocalStatus struct {
	Up       bool                          `json:"up"`
	Models   map[string]engine.ModelStatus `json:"models"`
	NotReady []string                      `json:"not_ready,omitempty"`
	Running  int                           `json:"running"`
	Queued   int                           `json:"queued"`
	Restarts uint64                        `json:"restarts"`
}

func (n *Node) localStatus() (*LocalStatus, bool) {
	if n.engine == nil {
		return nil, true
	}
	ready, notReady := n.engine.Ready()
	st := n.engine.Stats()
	return &LocalStatus{Up: st.Up, Models: n.engine.Models(), NotReady: notReady,
		Running: st.Running, Queued: st.Queued, Restarts: st.Restarts}, ready
}

// localCollectors exposes the engine's load on the node's registry.
func localCollectors(e *engine.Engine, models []string) []prometheus.Collector {
	gauge := func(name, help string, f func(engine.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(e.Stats()) })
	}
	cs := []prometheus.Collector{
		gauge("meridian_local_up", "1 when the local Ollama answers.", func(s engine.Stats) float64 {
			if s.Up {
				return 1
			}
			return 0
		}),
		gauge("meridian_local_running", "Requests admitted to the local engine and not finished.", func(s engine.Stats) float64 { return float64(s.Running) }),
		gauge("meridian_local_queue_depth", "Admitted local requests waiting for a free slot.", func(s engine.Stats) float64 { return float64(s.Queued) }),
		gauge("meridian_local_tokens_per_second", "Moving average of local generation speed per request.", func(s engine.Stats) float64 { return s.TokensPerSecond }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_local_restarts_total", Help: "Restarts of the supervised Ollama."},
			func() float64 { return float64(e.Stats().Restarts) }),
	}
	for _, m := range models {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_local_model_ready", Help: "1 when a placed model is loaded and serving.",
			ConstLabels: prometheus.Labels{"model": m},
		}, func() float64 {
			if e.Models()[m].State == engine.StateReady {
				return 1
			}
			return 0
		}))
	}
	return cs
}
