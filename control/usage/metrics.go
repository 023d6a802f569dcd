package usage

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// metrics are the aggregator's own counters; spend is read from the
// replicated state at scrape time (spendCollector), so every control
// node exports the same totals.
type metrics struct {
	batches prometheus.Counter
	records *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, f *fsm.FSM) *metrics {
	m := &metrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_usage_batches_total",
			Help: "Usage batches this node proposed through Raft while leading."}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_usage_records_total",
			Help: "Usage records this node aggregated while leading, by result: applied, duplicate (already counted) or malformed (dropped)."},
			[]string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.records, &spendCollector{f: f})
	}
	return m
}

// otherLabel replaces a tenant or model the state does not know, so
// records cannot grow the label sets beyond the configured entities.
const otherLabel = "_other"

var (
	costDesc = prometheus.NewDesc("meridian_cost_usd_total",
		"Spend in USD by tenant and model, from the replicated usage totals (exact totals: GET /v1/control/usage).",
		[]string{"tenant", "model"}, nil)
	tokensDesc = prometheus.NewDesc("meridian_usage_tokens_total",
		"Tokens by tenant, model and direction (in: prompt, out: completion), from the replicated usage totals.",
		[]string{"tenant", "model", "direction"}, nil)
	requestsDesc = prometheus.NewDesc("meridian_usage_requests_total",
		"Served requests by tenant and model, from the replicated usage totals.",
		[]string{"tenant", "model"}, nil)
	budgetDesc = prometheus.NewDesc("meridian_budget_usd",
		"A tenant's budget per period (month, week or day, UTC), USD; tenants without a budget are not listed.",
		[]string{"tenant", "period"}, nil)
	spendDesc = prometheus.NewDesc("meridian_budget_spend_usd",
		"A tenant's spend in its current budget period, USD, from the replicated usage totals; tenants without a budget are not listed.",
		[]string{"tenant", "period"}, nil)
)

type spendCollector struct{ f *fsm.FSM }

func (c *spendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- costDesc
	ch <- tokensDesc
	ch <- requestsDesc
}

func (c *spendCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.State()
	type key struct{ tenant, model string }
	type sum struct {
		requests, in, out uint64
		nano              int64
	}
	sums := map[key]*sum{}
	label := func(kind, id string) string {
		if id == "" {
			return ""
		}
		if _, ok := s.Get(kind, id); ok {
			return id
		}
		return otherLabel
	}
	s.UsageTotals("", func(t *controlv1.UsageTotal) bool {
		k := key{label(fsm.KindTenant, t.GetTenant()), label(fsm.KindModel, t.GetModel())}
		v := sums[k]
		if v == nil {
			v = &sum{}
			sums[k] = v
		}
		v.requests += t.GetRequests()
		v.in += t.GetTokensIn()
		v.out += t.GetTokensOut()
		v.nano += t.GetCostNanoUsd()
		return true
	})
	for k, v := range sums {
		ch <- prometheus.MustNewConstMetric(costDesc, prometheus.CounterValue, float64(v.nano)/usagewire.NanoPerUSD, k.tenant, k.model)
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(v.requests), k.tenant, k.model)
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.CounterValue, float64(v.in), k.tenant, k.model, "in")
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.CounterValue, float64(v.out), k.tenant, k.model, "out")
	}
}

// BudgetCollector exports each budgeted tenant's budget and its spend in
// the current period, read from the replicated state at scrape time, so
// every control node exports them, leader or not, aggregating or not.
func BudgetCollector(f *fsm.FSM) prometheus.Collector { return budgetCollector{f} }

type budgetCollector struct{ f *fsm.FSM }

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetDesc
	ch <- spendDesc
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	s, now := c.f.State(), time.Now()
	for _, m := range s.List(fsm.KindTenant) {
		t := m.(*controlv1.Tenant)
		if !(t.GetMonthlyBudget() > 0) {
			continue
		}
		period := t.GetBudgetPeriod()
		if period == "" {
			period = "month"
		}
		spend, _, _ := s.TenantSpend(t.GetId(), now)
		ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, t.GetMonthlyBudget(), t.GetId(), period)
		ch <- prometheus.MustNewConstMetric(spendDesc, prometheus.GaugeValue, float64(spend)/usagewire.NanoPerUSD, t.GetId(), period)
	}
}
