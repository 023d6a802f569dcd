package api

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/usage"
)

// metrics are one control node's Prometheus collectors, on the node's
// own registry so several nodes can run in one test process.
type metrics struct {
	reg *prometheus.Registry // nil when the node serves a Registerer of its own
	// writes counts writes this node answered, by outcome: "ok", an error
	// code, or "forwarded".
	writes *prometheus.CounterVec
	// writeSeconds is the time to answer a write, forwarding included.
	writeSeconds prometheus.Histogram
}

func newMetrics(node *cluster.Node, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{}
	own := reg == nil
	if own {
		m.reg = prometheus.NewRegistry()
		reg = m.reg
	}
	m.writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_control_writes_total", Help: "Writes answered by this node, by outcome (ok, an error code, or forwarded).",
	}, []string{"outcome"})
	m.writeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "meridian_control_write_seconds", Help: "Time to answer a write, forwarding and holding included.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	gauge := func(name, help string, f func(cluster.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(node.Stats()) })
	}
	cs := []prometheus.Collector{m.writes, m.writeSeconds,
		gauge("meridian_control_raft_leader", "1 if this node leads.", func(s cluster.Stats) float64 {
			if s.State == "Leader" {
				return 1
			}
			return 0
		}),
		gauge("meridian_control_raft_term", "Current Raft term.", func(s cluster.Stats) float64 { return float64(s.Term) }),
		gauge("meridian_control_raft_last_index", "Last Raft log index.", func(s cluster.Stats) float64 { return float64(s.LastIndex) }),
		gauge("meridian_control_raft_commit_index", "Raft commit index.", func(s cluster.Stats) float64 { return float64(s.CommitIndex) }),
		gauge("meridian_control_raft_applied_index", "Raft applied index.", func(s cluster.Stats) float64 { return float64(s.AppliedIndex) }),
		gauge("meridian_control_state_index", "Index of the last change to the fleet state (X-Meridian-Index).", func(s cluster.Stats) float64 { return float64(s.StateIndex) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_control_leader_known", Help: "1 if this node knows a leader."}, func() float64 {
			if _, _, ok := node.Leader(); ok {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_control_replica_halted",
			Help: "1 once this node's replica met a log entry it could not apply and stopped applying; rebuild the node."}, func() float64 {
			if node.Healthy() != nil {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	cs = append(cs, node.Collectors()...)
	cs = append(cs, usage.BudgetCollector(node.FSM()))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	return m, nil
}

// handler serves the API's own registry; with a Registerer from the
// config, the node serves its registry itself and this is a 404.
func (m *metrics) handler() http.Handler {
	if m.reg == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
