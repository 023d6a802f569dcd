package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestReportSummaryLine(t *testing.T) {
	ms := time.Millisecond
	res := results{samples: 3, rows: []row{
		{delayMS: 0, ping: 10 * time.Microsecond, ttft: [numPaths]time.Duration{ms / 10, ms / 2, 3 * ms, 3 * ms, ms / 2}},
		{delayMS: 40, ping: 80 * ms, ttft: [numPaths]time.Duration{ms / 10, 80*ms + ms/2, 82 * ms, 240 * ms, 81 * ms}},
	}}
	r := res.report()
	re := regexp.MustCompile(`^links: delay_ms=40 warm_added_ms=[0-9.]+ zerortt_added_ms=[0-9.]+ tcp_tls_new_added_ms=[0-9.]+ ratio_tcp_over_warm=[0-9.]+$`)
	if !re.MatchString(r.summary) {
		t.Fatalf("summary %q", r.summary)
	}
	if !strings.Contains(r.summary, "warm_added_ms=80.40") || !strings.Contains(r.summary, "ratio_tcp_over_warm=2.98") {
		t.Errorf("summary %q", r.summary)
	}
	if !strings.Contains(r.text, "ok   40 ms: warm link adds 80.40 ms") || !strings.Contains(r.text, "MISS 0 ms: new 0-RTT link") {
		t.Errorf("verdicts:\n%s", r.text)
	}
	if strings.Count("\n"+r.markdown, "\n| ") != 3 {
		t.Errorf("markdown:\n%s", r.markdown)
	}
}
