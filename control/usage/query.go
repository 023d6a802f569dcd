package usage

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// Group-by dimensions of a Query.
var GroupBys = []string{"tenant", "key", "model", "hour", "day"}

// Query selects and groups totals. Empty filters match everything.
type Query struct {
	Tenant, Key, Model string
	// From and To bound the hours counted: an hour counts when it starts
	// in [From, To). Zero means unbounded.
	From, To time.Time
	// GroupBy lists dimensions from GroupBys; none sums everything into
	// one row.
	GroupBy []string
}

// ErrBadQuery wraps every reason a query is refused.
var ErrBadQuery = errors.New("bad usage query")

// Validate checks the query.
func (q *Query) Validate() error {
	for _, g := range q.GroupBy {
		if !slices.Contains(GroupBys, g) {
			return fmt.Errorf("%w: group_by %q is not one of %s", ErrBadQuery, g, strings.Join(GroupBys, ", "))
		}
	}
	if slices.Contains(q.GroupBy, "hour") && slices.Contains(q.GroupBy, "day") {
		return fmt.Errorf("%w: group by hour or by day, not both", ErrBadQuery)
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return fmt.Errorf("%w: from must be before to", ErrBadQuery)
	}
	return nil
}

// Row is one group's totals. Grouped-by fields are set; the others are
// empty. CostUSD is CostNanoUSD as an exact decimal string.
type Row struct {
	Tenant      string `json:"tenant,omitempty"`
	Key         string `json:"key,omitempty"`
	Model       string `json:"model,omitempty"`
	Hour        string `json:"hour,omitempty"`
	Day         string `json:"day,omitempty"`
	Requests    uint64 `json:"requests"`
	TokensIn    uint64 `json:"tokens_in"`
	TokensOut   uint64 `json:"tokens_out"`
	CostUSD     string `json:"cost_usd"`
	CostNanoUSD int64  `json:"cost_nano_usd"`
}

// Run answers a query from one state: rows sorted by time (day, hour),
// then tenant, key and model.
func (q *Query) Run(s *fsm.State) ([]Row, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	has := func(g string) bool { return slices.Contains(q.GroupBy, g) }
	from, to := int64(-1<<62), int64(1<<62)
	if !q.From.IsZero() {
		// An hour counts when it starts at or after From.
		from = (q.From.UnixMilli() + msPerHour - 1) / msPerHour
	}
	if !q.To.IsZero() {
		to = (q.To.UnixMilli() + msPerHour - 1) / msPerHour
	}
	rows := map[Row]*Row{}
	s.UsageTotals(q.Tenant, func(t *controlv1.UsageTotal) bool {
		if q.Key != "" && t.GetKey() != q.Key || q.Model != "" && t.GetModel() != q.Model || t.GetHour() < from || t.GetHour() >= to {
			return true
		}
		var k Row
		if has("tenant") {
			k.Tenant = t.GetTenant()
		}
		if has("key") {
			k.Key = t.GetKey()
		}
		if has("model") {
			k.Model = t.GetModel()
		}
		at := time.UnixMilli(t.GetHour() * msPerHour).UTC()
		if has("hour") {
			k.Hour = at.Format(time.RFC3339)
		}
		if has("day") {
			k.Day = at.Format(time.DateOnly)
		}
		r := rows[k]
		if r == nil {
			r = &Row{Tenant: k.Tenant, Key: k.Key, Model: k.Model, Hour: k.Hour, Day: k.Day}
			rows[k] = r
		}
		r.Requests += t.GetRequests()
		r.TokensIn += t.GetTokensIn()
		r.TokensOut += t.GetTokensOut()
		r.CostNanoUSD += t.GetCostNanoUsd()
		return true
	})
	out := make([]Row, 0, len(rows))
	for _, r := range rows {
		r.CostUSD = USD(r.CostNanoUSD)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		for _, c := range [][2]string{{a.Day, b.Day}, {a.Hour, b.Hour}, {a.Tenant, b.Tenant}, {a.Key, b.Key}, {a.Model, b.Model}} {
			if d := strings.Compare(c[0], c[1]); d != 0 {
				return d
			}
		}
		return 0
	})
	return out, nil
}

const msPerHour = int64(time.Hour / time.Millisecond)

// USD formats nano-USD as an exact decimal string of dollars, with nine
// decimals ("12.500000000").
func USD(nano int64) string {
	return new(big.Rat).SetFrac64(nano, usagewire.NanoPerUSD).FloatString(9)
}
