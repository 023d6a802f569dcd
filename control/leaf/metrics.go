package leaf

import "github.com/prometheus/client_golang/prometheus"

// metrics are the keeper's; nil Registerer: none are exported.
type metrics struct {
	requests *prometheus.CounterVec
	fetches  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, k *Keeper) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_leaf_snapshot_requests_total",
			Help: "Snapshot requests the keeper handled while its responder was subscribed, by result: served (from the held table), forwarded (to the hub, which came back), none (no table held yet).",
		}, []string{"result"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_leaf_snapshot_fetches_total", Help: "Snapshots the keeper fetched from the hub, by result (ok, error).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, f func(Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(k.Status()) })
	}
	reg.MustRegister(m.requests, m.fetches,
		gauge("meridian_leaf_table_revision", "Revision of the table the leaf holds; 0 when none.", func(s Status) float64 { return float64(s.Revision) }),
		gauge("meridian_leaf_hub_connected", "1 while the leaf's connection to the control plane's NATS is up.", func(s Status) float64 { return b2f(s.HubConnected) }),
		gauge("meridian_leaf_answering", "1 while the keeper answers the region's snapshot requests (the hub is unreachable).", func(s Status) float64 { return b2f(s.Answering) }),
		gauge("meridian_leaf_edges", "Edge NATS keys the held table admits.", func(s Status) float64 { return float64(s.Edges) }),
	)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
