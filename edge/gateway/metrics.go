package gateway

import (
	"time"

	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/prometheus/client_golang/prometheus"
)

// breakerCollector exposes every target's breaker state: 0 closed, 1
// half-open, 2 open. Targets come from the table, so labels stay bounded.
type breakerCollector struct{ g *Gateway }

var breakerDesc = prometheus.NewDesc("meridian_breaker_state", "Target breaker state: 0 closed, 1 half-open, 2 open.", []string{"target"}, nil)

func (c breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- breakerDesc }

func (c breakerCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	p := &router.Plan{}
	seen := map[string]bool{}
	for _, m := range c.g.Table().Models() {
		c.g.router.Choose(&router.Request{Model: m.ID}, p)
		for _, list := range [][]router.Choice{p.Targets, p.Excluded} {
			for i := range list {
				t := &list[i]
				if seen[t.Key] || t.Stats() == nil {
					continue
				}
				seen[t.Key] = true
				v := 0.0
				switch t.Stats().State(now) {
				case router.BreakerHalfOpen:
					v = 1
				case router.BreakerOpen:
					v = 2
				}
				ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, v, t.Key)
			}
		}
	}
}
