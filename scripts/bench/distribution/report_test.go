package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestReportAndSummary(t *testing.T) {
	cfg := Config{Edges: 100, Changes: 30}
	rs := []result{
		{name: "baseline: bare NATS publish→receive", p50: time.Millisecond, p99: 2 * time.Millisecond},
		{name: "table change, 100 edges", routes: 10, bytes: 512, p50: 3 * time.Millisecond, p99: 9 * time.Millisecond},
		{name: "table change, 100 edges", routes: 1000, bytes: 50000, p50: 30 * time.Millisecond, p99: 45500 * time.Microsecond},
	}
	text := report(cfg, rs)
	if strings.Count(text, "\n| ") != 4 || !strings.Contains(text, "1000 routes, 48.8 KiB | 30.00 ms | 45.50 ms") {
		t.Fatalf("report:\n%s", text)
	}
	line := summary(cfg, rs[2])
	if !regexp.MustCompile(`^distribution: edges=100 p50_ms=30\.00 p99_ms=45\.50 routes=1000$`).MatchString(line) {
		t.Fatalf("summary %q", line)
	}
	if p := percentile([]time.Duration{5, 1, 4, 2, 3}, .5); p != 3 {
		t.Fatalf("median %v", p)
	}
}
