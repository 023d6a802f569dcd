package promtest

import (
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a", "b"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "y", Help: "y"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "z_seconds", Help: "z"})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("1", "2").Add(3)
	c.WithLabelValues("4", "5").Inc()
	g.Set(7)
	h.Observe(1)
	h.Observe(2)
	for name, want := range map[string]map[string]float64{
		"x_total":   {`a="1",b="2"`: 3, `a="4",b="5"`: 1},
		"y":         {"": 7},
		"z_seconds": {"": 2},
		"absent":    {},
	} {
		if got := Values(t, reg, name); !maps.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}
