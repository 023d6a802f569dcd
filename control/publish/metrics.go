package publish

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	revision    prometheus.Gauge
	bytes       prometheus.Gauge
	rejectedRev prometheus.Gauge
	rejectedWhy *prometheus.GaugeVec
	rejections  prometheus.Counter
	leader      prometheus.Gauge
	published   *prometheus.CounterVec
	snapshots   *prometheus.CounterVec
	reports     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_control_table_revision", Help: "Revision of the last valid routing table this node compiled.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_control_table_bytes", Help: "Encoded size of the last valid routing table, bytes.",
		}),
		rejectedRev: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_control_table_rejected_revision", Help: "Revision of the newest state when it failed validation and was not published; 0 when the newest state is published.",
		}),
		rejectedWhy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_control_table_rejected", Help: "1, labelled with the reason, while the newest state fails validation.",
		}, []string{"reason"}),
		rejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_control_table_rejections_total", Help: "States that failed validation and were not published.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_control_table_publisher", Help: "1 while this node leads and publishes the table.",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_control_table_updates_total", Help: "Table updates published, by kind (full, delta).",
		}, []string{"kind"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_control_table_snapshots_total", Help: "Snapshot requests answered, by outcome.",
		}, []string{"outcome"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_control_edge_reports_total", Help: "Edges' applied reports received, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.revision, m.bytes, m.rejectedRev, m.rejectedWhy, m.rejections, m.leader, m.published, m.snapshots, m.reports)
	}
	return m
}

func (m *metrics) accepted(rev uint64, size int) {
	m.revision.Set(float64(rev))
	m.bytes.Set(float64(size))
	m.rejectedRev.Set(0)
	m.rejectedWhy.Reset()
}

func (m *metrics) rejected(reason string, rev uint64) {
	if len(reason) > 200 {
		reason = reason[:200] + "…"
	}
	m.rejections.Inc()
	m.rejectedRev.Set(float64(rev))
	m.rejectedWhy.Reset()
	m.rejectedWhy.WithLabelValues(reason).Set(1)
}
