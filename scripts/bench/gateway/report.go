package main

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/scripts/bench/loadgen"
)

// minAdded is the floor for minproxy's added latency when it divides:
// below it the ratio would measure noise.
const minAdded = time.Microsecond

// ratio is a headline ratio; clamped says minproxy's added value was
// raised to minAdded to divide by it.
type ratio struct {
	v       float64
	clamped bool
}

func (r ratio) String() string {
	s := strconv.FormatFloat(r.v, 'f', 2, 64)
	if r.clamped {
		s += " †"
	}
	return s
}

// addedRatio is (edge − direct) / max(proxy − direct, minAdded).
func addedRatio(d, p, e time.Duration) ratio {
	den := p - d
	r := ratio{clamped: den < minAdded}
	den = max(den, minAdded)
	r.v = float64(e-d) / float64(den)
	return r
}

// report turns results into the table, the note and the summary line.
type report struct {
	cfg     Config
	res     results
	at      time.Time
	head    *scenario // the open loop at the highest rate
	addP50  ratio
	addP99  ratio
	maxRPS  float64
	ttft    ratio
	ttftSet bool
	errors  int
	rssMB   int64
	hwmMB   int64
	clamped bool // some ratio divides by a clamped value
}

func newReport(cfg Config, res results, at time.Time) *report {
	r := &report{cfg: cfg, res: res, at: at, errors: res.errors(edged)}
	var best [numPaths]float64
	for i := range r.res.scenarios {
		s := &r.res.scenarios[i]
		switch s.kind {
		case openLoop:
			if r.head == nil || s.rate > r.head.rate {
				r.head = s
			}
		case closedLoop:
			for p := range numPaths {
				best[p] = max(best[p], s.res[p].Throughput())
			}
		case streaming:
			if r.ttftSet {
				break // the headline is the first streaming scenario
			}
			r.ttftSet = true
			r.ttft = addedRatio(ttftP50(&s.res[direct]), ttftP50(&s.res[proxied]), ttftP50(&s.res[edged]))
		}
	}
	h := &r.head.res
	r.addP50 = addedRatio(h[direct].P50(), h[proxied].P50(), h[edged].P50())
	r.addP99 = addedRatio(h[direct].P99(), h[proxied].P99(), h[edged].P99())
	r.clamped = r.addP50.clamped || r.addP99.clamped || r.ttft.clamped
	if best[proxied] > 0 {
		r.maxRPS = best[edged] / best[proxied]
	}
	r.rssMB = int64(math.Round(float64(res.rss) / 1024))
	r.hwmMB = int64(math.Round(float64(res.hwm) / 1024))
	return r
}

func ttftP50(r *loadgen.Result) time.Duration { return loadgen.Percentile(r.TTFT, 0.5) }

// summary is the one-line result, the last line of stdout.
func (r *report) summary() string {
	return fmt.Sprintf("gateway: added_p50_ratio=%.2f added_p99_ratio=%.2f max_rps_ratio=%.2f stream_ttft_added_ratio=%.2f errors=%d rss_mb=%d",
		r.addP50.v, r.addP99.v, r.maxRPS, r.ttft.v, r.errors, r.rssMB)
}

// markdown renders the scenario table and the headline table.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("| scenario | metric | direct | minproxy | edge | minproxy added | edge added | edge ÷ minproxy |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for i := range r.res.scenarios {
		s := &r.res.scenarios[i]
		name := s.name(r.cfg)
		switch s.kind {
		case openLoop:
			r.latencyRow(&b, name, "p50", s, (*loadgen.Result).P50)
			r.latencyRow(&b, "", "p99", s, (*loadgen.Result).P99)
			row(&b, "", "achieved req/s", perPath(s, func(x *loadgen.Result) string { return fmt.Sprintf("%.1f", x.AchievedRate()) }), "", "", "")
		case closedLoop:
			rps := perPath(s, func(x *loadgen.Result) string { return thousands(int64(math.Round(x.Throughput()))) })
			row(&b, name, "req/s", rps, "", "", fmt.Sprintf("%.2f", s.res[edged].Throughput()/max(s.res[proxied].Throughput(), 1e-9)))
			row(&b, "", "p50 / p99", perPath(s, func(x *loadgen.Result) string {
				return micros(x.P50()) + " / " + micros(x.P99())
			}), "", "", "")
		case streaming:
			r.latencyRow(&b, name, "TTFT p50", s, ttftP50)
			r.latencyRow(&b, "", "total p50", s, (*loadgen.Result).P50)
		}
	}
	var errs [numPaths]string
	for p := range numPaths {
		errs[p] = strconv.Itoa(r.res.errors(p))
	}
	row(&b, "all runs", "errors", errs, "", "", "")

	head := r.head.name(r.cfg)
	b.WriteString("\n| headline | value | target |\n|---|---:|---:|\n")
	fmt.Fprintf(&b, "| added p50, edge ÷ minproxy (%s) | %s | ≤ 1.3 |\n", head, r.addP50)
	fmt.Fprintf(&b, "| added p99, edge ÷ minproxy (%s) | %s | ≤ 1.5 |\n", head, r.addP99)
	fmt.Fprintf(&b, "| best closed-loop req/s, edge ÷ minproxy | %.2f | ≥ 0.8 |\n", r.maxRPS)
	fmt.Fprintf(&b, "| stream added TTFT p50, edge ÷ minproxy (one stream at a time) | %s | ≤ 1.5 |\n", r.ttft)
	fmt.Fprintf(&b, "| edge errors | %d | 0 |\n", r.errors)
	fmt.Fprintf(&b, "| edge RSS after the run (peak) | %d MB (%d MB) | ≤ 60 MB |\n", r.rssMB, r.hwmMB)
	b.WriteString("\nAdded = the path's percentile minus the direct path's, per scenario. Open-loop latency runs from each request's scheduled send time.")
	if r.clamped {
		fmt.Fprintf(&b, " † minproxy's added latency was below %v and is clamped to %v to divide by it.", minAdded, minAdded)
	}
	b.WriteString("\n")
	return b.String()
}

// latencyRow writes one latency metric with the added columns; it marks
// the report clamped when the ratio divides by a clamped value.
func (r *report) latencyRow(b *strings.Builder, name, metric string, s *scenario, f func(*loadgen.Result) time.Duration) {
	d, p, e := f(&s.res[direct]), f(&s.res[proxied]), f(&s.res[edged])
	q := addedRatio(d, p, e)
	r.clamped = r.clamped || q.clamped
	row(b, name, metric, [numPaths]string{micros(d), micros(p), micros(e)}, micros(p-d), micros(e-d), q.String())
}

func perPath(s *scenario, f func(*loadgen.Result) string) [numPaths]string {
	var v [numPaths]string
	for p := range numPaths {
		v[p] = f(&s.res[p])
	}
	return v
}

func row(b *strings.Builder, name, metric string, v [numPaths]string, proxyAdded, edgeAdded, ratio string) {
	fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, metric, v[direct], v[proxied], v[edged], proxyAdded, edgeAdded, ratio)
}

// note is one line on when, where and how the numbers were taken.
func (r *report) note() string {
	plan := fmt.Sprintf("full plan: %v open and %v closed per path and scenario", r.cfg.OpenDuration, r.cfg.ClosedDuration)
	if r.cfg.Quick {
		plan = fmt.Sprintf("quick plan: %v open and %v closed per path and scenario", r.cfg.OpenDuration, r.cfg.ClosedDuration)
	}
	var rates, late []string
	for i := range r.res.scenarios {
		s := &r.res.scenarios[i]
		if s.kind != openLoop {
			continue
		}
		rates = append(rates, fmt.Sprintf("%s → %.1f/%.1f/%.1f", thousands(int64(s.rate)),
			s.res[direct].AchievedRate(), s.res[proxied].AchievedRate(), s.res[edged].AchievedRate()))
		all := loadgen.Merge(s.res[:]...)
		late = append(late, fmt.Sprintf("%s/%s", micros(loadgen.Percentile(all.Lateness, 0.5)), micros(loadgen.Percentile(all.Lateness, 0.99))))
	}
	return fmt.Sprintf("_Measured %s on %s/%s, nproc %d, %s; %s, %d interleaved rounds; load generator achieved req/s (direct/minproxy/edge): %s; its send lateness p50/p99: %s._",
		r.at.UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(),
		plan, r.cfg.Rounds, strings.Join(rates, ", "), strings.Join(late, ", "))
}

// micros formats d in whole microseconds.
func micros(d time.Duration) string {
	return thousands(int64(math.Round(float64(d)/float64(time.Microsecond)))) + " µs"
}

// thousands formats n with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
