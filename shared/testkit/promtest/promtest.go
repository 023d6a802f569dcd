// Package promtest reads what a Prometheus registry would expose, for
// tests that assert on metric names, labels and values. Production code
// never imports it.
package promtest

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// TB is the part of testing.TB that Values needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Values gathers g and returns the samples of the metric called name,
// keyed by their labels as `k="v",k="v"` in Prometheus' order ("" for a
// metric without labels). Counters, gauges and untyped metrics have a
// value; a histogram's is its sample count. A metric that is not
// registered gives an empty map.
func Values(t TB, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			}
			out[strings.Join(labels, ",")] = v
		}
	}
	return out
}
