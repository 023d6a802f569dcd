package main

import (
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	r := results{fsyncP50: time.Millisecond, fsyncP99: 2 * time.Millisecond, writeP50: 3 * time.Millisecond, writeP99: 8 * time.Millisecond,
		writesPerS: 1500, viaFollowers: 1200, failovers: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second},
		transfers: []time.Duration{5 * time.Millisecond, 7 * time.Millisecond, 9 * time.Millisecond}, wanFailovers: []time.Duration{600 * time.Millisecond},
		wanDelay: 40 * time.Millisecond, idle: 10 * time.Second}
	out := report(Config{Writers: 16}, r)
	for _, want := range []string{"3.00 ms", "3.0× a raw fsync'd append", "1500 writes/s", "2000 ms", "7.0 ms", "600 ms", "40ms one-way", "| 0 | 0 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
