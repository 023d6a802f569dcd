package usagewire

import (
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

func TestCostNanoUSD(t *testing.T) {
	p := table.Price{Input: 2.5, Output: 10} // USD per 1M tokens
	cases := []struct {
		in, out uint64
		want    int64
	}{
		{0, 0, 0},
		{1, 0, 2500},                   // $2.5e-6
		{0, 1, 10000},                  // $1e-5
		{1_000_000, 1_000_000, 12.5e9}, // $12.50
		{3, 7, 3*2500 + 7*10000},       // sides add exactly
		{1, 1, 12500},
	}
	for _, c := range cases {
		if got := CostNanoUSD(c.in, c.out, p); got != c.want {
			t.Errorf("CostNanoUSD(%d, %d) = %d, want %d", c.in, c.out, got, c.want)
		}
	}
	// A price with a fraction of a nano-dollar per token rounds per side.
	if got := CostNanoUSD(3, 0, table.Price{Input: 0.0001}); got != 0 {
		t.Errorf("3 tokens at $0.0001/1M = %d nano-USD, want 0 (0.3 rounds down)", got)
	}
	if got := CostNanoUSD(5, 0, table.Price{Input: -1}); got != 0 {
		t.Errorf("a negative price cost %d", got)
	}
}

func TestPeriodBounds(t *testing.T) {
	at := time.Date(2026, 12, 2, 11, 30, 0, 0, time.FixedZone("x", 5*3600)) // 06:30 UTC, a Wednesday
	cases := []struct {
		period     string
		start, end string
	}{
		{"", "2026-12-01", "2027-01-01"},
		{"month", "2026-12-01", "2027-01-01"},
		{"week", "2026-11-30", "2026-12-07"},
		{"day", "2026-12-02", "2026-12-03"},
	}
	for _, c := range cases {
		s, e := PeriodBounds(c.period, at)
		if s.Format(time.DateOnly) != c.start || e.Format(time.DateOnly) != c.end || s.Location() != time.UTC {
			t.Errorf("%q: %v – %v, want %s – %s UTC", c.period, s, e, c.start, c.end)
		}
	}
	// A Sunday belongs to the week that began the Monday before.
	if s, _ := PeriodBounds("week", time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)); s.Format(time.DateOnly) != "2026-11-30" {
		t.Errorf("Sunday's week starts %v", s)
	}
}

func TestSubjects(t *testing.T) {
	if UsageSubject("edge-1") != "meridian.v1.usage.edge-1" || LimitsSubject("edge-1") != "meridian.v1.limits.edge-1" {
		t.Fatal("subjects changed: they are a wire format")
	}
	if UsageSubject("pop.fra.1") != "meridian.v1.usage.pop_fra_1" || LimitsSubject("a.b") != "meridian.v1.limits.a_b" {
		t.Fatal("a dotted node ID must stay one subject token")
	}
}
