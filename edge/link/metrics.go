package link

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// linkMetrics are the link gauges and counters. With no registerer they
// are still updated (tests read them) but never exported.
type linkMetrics struct {
	up         *prometheus.GaugeVec   // peer
	streams    *prometheus.CounterVec // direction, outcome
	open       *prometheus.GaugeVec   // direction
	bytes      *prometheus.CounterVec // direction
	handshakes *prometheus.CounterVec // kind
	rtt        *prometheus.GaugeVec   // peer
	silent     *prometheus.CounterVec // peer
}

func newLinkMetrics(reg prometheus.Registerer) (*linkMetrics, error) {
	m := &linkMetrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_link_up", Help: "1 while the QUIC link to a peer is up, 0 while it is down.",
		}, []string{"peer"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_streams_total", Help: "Forwarded-request streams by direction (out = forwarded, in = served) and outcome.",
		}, []string{"direction", "outcome"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_link_streams_open", Help: "Forwarded-request streams open now, by direction.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_bytes_total", Help: "Frame bytes on link streams, by direction (sent, received).",
		}, []string{"direction"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_handshakes_total", Help: "Links dialled, by handshake kind: full, resumed (1-RTT) or 0rtt.",
		}, []string{"kind"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_link_rtt_seconds", Help: "Smoothed round trip of a peer link's pings.",
		}, []string{"peer"}),
		silent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_unresponsive_total", Help: "Peer links declared dead because their pings went unanswered.",
		}, []string{"peer"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.up, m.streams, m.open, m.bytes, m.handshakes, m.rtt, m.silent} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("link: metrics: %w", err)
		}
	}
	return m, nil
}
