// Package usagewire is what edges and control nodes agree on about usage:
// the NATS subjects and JetStream stream that carry usage records and
// limit reports (proto/usage/v1), how a record's cost is computed from
// the table's prices, and where budget periods begin and end.
//
// Both sides compute cost with CostNanoUSD, in integers, so that the
// control plane's totals equal the sum of the edges' records exactly.
package usagewire

import (
	"math"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// Stream is the JetStream stream that holds usage records until the
// control plane has applied them.
const Stream = "MERIDIAN_USAGE"

// UsageSubjects is the stream's subject filter: every node's records.
const UsageSubjects = "meridian.v1.usage.*"

// UsageSubject is the subject node publishes its usage records on; the
// NATS server lets an edge publish on its own only. A node ID is one
// subject token: its dots become underscores, as in tablewire's
// subjects, so that UsageSubjects matches every node.
func UsageSubject(node string) string { return "meridian.v1.usage." + token(node) }

func token(node string) string { return strings.ReplaceAll(node, ".", "_") }

// LimitsSubjects matches every edge's limit reports.
const LimitsSubjects = "meridian.v1.limits.*"

// LimitsSubject is the subject node publishes its limit reports on.
func LimitsSubject(node string) string { return "meridian.v1.limits." + token(node) }

// DuplicateWindow is how long JetStream remembers a record's message ID
// (its request ID) to drop a re-sent copy. An edge that spooled records
// while the bus was away can re-send them later than this; the control
// plane's aggregation drops those by request ID again.
const DuplicateWindow = 10 * time.Minute

// NanoPerUSD is how many cost units make one US dollar.
const NanoPerUSD = 1_000_000_000

// CostNanoUSD is the cost of tokensIn prompt and tokensOut completion
// tokens at p, whose prices are USD per 1M tokens: each side is rounded
// to a whole nano-dollar on its own, so the sum over many records is
// exact integer arithmetic. Unknown prices (NaN, negative, infinite) cost
// nothing rather than poisoning totals; table validation refuses them.
func CostNanoUSD(tokensIn, tokensOut uint64, p table.Price) int64 {
	return side(tokensIn, p.Input) + side(tokensOut, p.Output)
}

func side(tokens uint64, perMillion float64) int64 {
	if tokens == 0 || !(perMillion > 0) || math.IsInf(perMillion, 0) {
		return 0
	}
	// USD per 1M tokens = perMillion * 1000 nano-USD per token.
	v := math.Round(float64(tokens) * perMillion * 1000)
	if v >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// Budget periods, as table.Tenant.BudgetPeriod names them.
const (
	PeriodMonth = "month"
	PeriodWeek  = "week"
	PeriodDay   = "day"
)

// PeriodBounds returns the UTC start and end of the budget period that
// contains t: calendar months ("month" or ""), ISO weeks starting on
// Monday ("week"), or days ("day"). An unknown period counts as a month.
func PeriodBounds(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	switch period {
	case PeriodDay:
		start = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	case PeriodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 7)
	default:
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
}
