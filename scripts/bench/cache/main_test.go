package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// The trace is reproducible, Zipf-skewed and paraphrased as asked.
func TestGenerate(t *testing.T) {
	c := DefaultTraceConfig()
	a, b := Generate(c), Generate(c)
	if len(a) != c.Requests {
		t.Fatalf("%d items", len(a))
	}
	counts := map[int]int{}
	paraphrased := 0
	texts := map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("item %d differs between two runs with one seed", i)
		}
		if a[i].Question < 0 || a[i].Question >= c.Questions {
			t.Fatalf("question %d out of range", a[i].Question)
		}
		counts[a[i].Question]++
		if a[i].Variant > 0 {
			paraphrased++
		}
		if q, ok := texts[a[i].Text]; ok && q != a[i].Question {
			t.Fatalf("two questions share the text %q", a[i].Text)
		}
		texts[a[i].Text] = a[i].Question
	}
	// The most asked question dominates; most questions are rare.
	if counts[0] < c.Requests/10 || counts[0] <= counts[10] || len(counts) < 50 {
		t.Fatalf("not Zipf-like: top %d, 11th %d, %d distinct", counts[0], counts[10], len(counts))
	}
	if share := float64(paraphrased) / float64(len(a)); share < c.Paraphrased-0.05 || share > c.Paraphrased+0.05 {
		t.Fatalf("%.2f paraphrased, want about %.2f", share, c.Paraphrased)
	}
}

// A short run against a real edge ends with the summary line, with hits
// far faster than misses.
func TestRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Trace.Requests, cfg.Latency, cfg.Workers, cfg.Timeout = 200, 20*time.Millisecond, 4, time.Minute
	var out, log bytes.Buffer
	if err := run(context.Background(), cfg, &out, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	m := regexp.MustCompile(`^cache: hit_ratio=([0-9.]+) hit_p50_us=(\d+) miss_p50_us=(\d+) saved_pct=([0-9.]+)\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("summary %q", out.String())
	}
	ratio, _ := strconv.ParseFloat(m[1], 64)
	hit, _ := strconv.Atoi(m[2])
	miss, _ := strconv.Atoi(m[3])
	saved, _ := strconv.ParseFloat(m[4], 64)
	if ratio <= 0.2 || ratio >= 1 || miss < 20_000 || hit >= miss || saved <= 0 {
		t.Fatalf("summary %q\n%s", out.String(), log.String())
	}
}
