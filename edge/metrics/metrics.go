// Package metrics holds the edge's one Prometheus registry and the
// request pipeline's collectors. Every collector lives on the node's own
// registry, so several nodes can run in one test process without
// colliding.
//
// Metrics reach packages one way: a package that has metrics of its own
// (engine, gateway, link, tablesync) takes a prometheus.Registerer in
// its Config, builds its collectors and registers them itself; nil
// registers none. edge/node makes one Metrics per node and hands every
// package its Registerer. The request collectors here are the one
// exception to "its own": api and gateway both record them, so they are
// built here once and reach those two as *Metrics. No package builds
// collectors for another, and no adapter stands in for a Registerer.
// Metric names and labels are an interface: ops/ alert rules and tests
// read them.
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the edge's collectors.
type Metrics struct {
	reg      *prometheus.Registry
	inFlight atomic.Int64

	// Requests counts finished requests by model, target and status code.
	Requests *prometheus.CounterVec
	// Attempts counts upstream attempts by target and outcome ("ok",
	// "error"); more attempts than requests means failover happened.
	Attempts *prometheus.CounterVec
	// Decisions counts served requests by route strategy and target kind
	// (local, peer, provider).
	Decisions *prometheus.CounterVec
	// Failovers counts requests served by another target than their
	// plan's first.
	Failovers prometheus.Counter
	// Refusals counts requests no target may serve, by code
	// (region_not_allowed, price_cap, capability_not_supported, …).
	Refusals *prometheus.CounterVec
	// TTFT is the time from receiving a streamed request to its first
	// chunk, by model and target.
	TTFT *prometheus.HistogramVec
	// Overhead is the time spent inside Meridian, upstream excluded.
	Overhead prometheus.Histogram
	// Tokens counts tokens by model, target and direction ("in", "out").
	Tokens *prometheus.CounterVec
	// InFlight is the number of requests being served.
	InFlight prometheus.Gauge
	// TableRevision is the revision of the routing table in use.
	TableRevision prometheus.Gauge
	// Errors counts finished requests that failed, by model, target
	// kind and error type (the API error's type, "stream_error" for a
	// stream broken after its first byte, "client_closed" for a client
	// that went away).
	Errors *prometheus.CounterVec
	// InterToken is a stream's mean gap between chunks, from its first
	// chunk to its end, by model and target kind; one observation per
	// stream of two chunks or more.
	InterToken *prometheus.HistogramVec
}

// New registers the edge's collectors on a fresh registry, with the Go
// runtime and process collectors beside them.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_requests_total", Help: "Finished requests by model, target and HTTP status.",
	}, []string{"model", "target", "status"})
	m.Attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_upstream_attempts_total", Help: "Upstream attempts by target and outcome.",
	}, []string{"target", "outcome"})
	m.Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_route_decisions_total", Help: "Served requests by route strategy and target kind.",
	}, []string{"strategy", "kind"})
	m.Failovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meridian_route_failovers_total", Help: "Requests served by another target than their plan's first.",
	})
	m.Refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_route_refusals_total", Help: "Requests no target may serve, by reason code.",
	}, []string{"code"})
	m.TTFT = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meridian_time_to_first_token_seconds", Help: "Time from request to first streamed chunk.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"model", "target"})
	m.Overhead = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "meridian_overhead_seconds", Help: "Time spent inside Meridian per request, upstream excluded.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3},
	})
	m.Tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_tokens_total", Help: "Tokens by model, target and direction (in = prompt, out = completion).",
	}, []string{"model", "target", "direction"})
	m.InFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meridian_requests_in_flight", Help: "Requests being served.",
	})
	m.TableRevision = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meridian_table_revision", Help: "Revision of the routing table in use.",
	})
	m.Errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_request_errors_total", Help: "Failed requests by model, target kind and error type.",
	}, []string{"model", "kind", "type"})
	m.InterToken = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meridian_inter_token_seconds", Help: "Mean gap between a stream's chunks, first chunk to end, by model and target kind.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"model", "kind"})
	m.reg.MustRegister(m.Errors, m.InterToken, m.Requests, m.Attempts, m.Decisions, m.Failovers, m.Refusals, m.TTFT, m.Overhead, m.Tokens, m.InFlight, m.TableRevision,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registerer returns the node's registry, for the Config of every
// package that registers metrics of its own.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// BeginRequest counts a request in flight; EndRequest counts it out.
func (m *Metrics) BeginRequest() {
	m.inFlight.Add(1)
	m.InFlight.Inc()
}

// EndRequest counts a request out of flight.
func (m *Metrics) EndRequest() {
	m.inFlight.Add(-1)
	m.InFlight.Dec()
}

// RequestsInFlight returns the requests being served, for load reports.
func (m *Metrics) RequestsInFlight() int64 { return m.inFlight.Load() }

// ObserveOverhead records d in the overhead histogram.
func (m *Metrics) ObserveOverhead(d time.Duration) { m.Overhead.Observe(d.Seconds()) }
