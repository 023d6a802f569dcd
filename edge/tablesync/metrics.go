package tablesync

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	stale       prometheus.Gauge
	connected   prometheus.Gauge
	unusable    prometheus.Gauge
	applied     *prometheus.CounterVec
	patched     prometheus.Counter
	rejected    prometheus.Counter
	unverified  *prometheus.CounterVec
	gaps        prometheus.Counter
	snapshots   *prometheus.CounterVec
	reconnects  prometheus.Counter
	cacheErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_table_stale", Help: "1 while the edge cannot confirm its routing table is current (served from disk, no heartbeat, or behind).",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_table_bus_connected", Help: "1 while a NATS server of the control plane is connected.",
		}),
		unusable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_table_unusable_providers", Help: "Providers in the table whose secret does not resolve on this edge.",
		}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_table_applied_total", Help: "Routing tables applied, by source (control, disk, config).",
		}, []string{"source"}),
		patched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_table_patched_total", Help: "Deltas installed by patching the table in use (routes, keys, budget state only), a subset of those applied.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_table_rejected_total", Help: "Routing tables or updates rejected; the previous table stayed in use.",
		}),
		unverified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_table_unverified_total", Help: "Control messages refused before use: bad or missing signature, or another cluster's; by kind (update, heartbeat, snapshot).",
		}, []string{"kind"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_table_gaps_total", Help: "Deltas that did not follow the edge's revision, answered with a snapshot.",
		}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_table_snapshots_total", Help: "Snapshot requests, by outcome.",
		}, []string{"outcome"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_table_bus_reconnects_total", Help: "Reconnections to the control plane's NATS servers.",
		}),
		cacheErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_table_cache_errors_total", Help: "Failed writes of the table to disk.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.stale, m.connected, m.unusable, m.applied, m.patched, m.rejected, m.unverified, m.gaps, m.snapshots, m.reconnects, m.cacheErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("tablesync: metrics: %w", err)
		}
	}
	return m, nil
}

// registerLag registers the gauges read from the Syncer's status at
// scrape time: how far behind the control plane the table is, and how
// long the control plane has been silent.
func (s *Syncer) registerLag(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_table_lag_seconds",
			Help: "How long the table in use has been behind the revision the control plane's heartbeat announced; 0 while current."},
			func() float64 {
				since := s.behind.Load()
				if since == 0 {
					return 0
				}
				return max(s.cfg.Now().Sub(time.Unix(0, since)).Seconds(), 0)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_table_leader_revision",
			Help: "Revision the control plane's last heartbeat announced; 0 before the first."},
			func() float64 { return float64(s.Status().LeaderRevision) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_table_last_contact_age_seconds",
			Help: "Seconds since the control plane was last heard from (heartbeat, update or snapshot); -1 before the first."},
			func() float64 {
				last := s.Status().LastContact
				if last.IsZero() {
					return -1
				}
				return max(s.cfg.Now().Sub(last).Seconds(), 0)
			}),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("tablesync: metrics: %w", err)
		}
	}
	return nil
}
