// Command router measures one routing decision: router.Choose on a fleet
// of 100 nodes in 10 regions with 50 models (each placed on 5 nodes and
// routed to 3 providers), under each strategy, against the least a
// decision could cost, a map lookup of the model's route. It runs the
// benchmarks in process with testing.Benchmark, each -count times, and
// reports the median of each.
//
//	go run ./scripts/bench/router [-benchtime 1s] [-count 3] [-readme README.md]
//
// The last line of stdout is the summary, for scripts:
//
//	router: decide_ns=<n> allocs=<n> baseline_ns=<n>
//
// decide_ns is the median over the strategies of their ns/op, allocs the
// most allocations per decision of any strategy. The budget is 5 µs and
// no allocation.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/edge/router/routertest"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Config is what a run measures and where it writes.
type Config struct {
	// Benchtime is each benchmark's run time.
	Benchtime time.Duration
	// Count is the runs per benchmark; the median is reported.
	Count int
	// Readme, when set, is a markdown file whose bench:router section
	// gets the results.
	Readme string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Benchtime: time.Second, Count: 3} }

// Validate reports a config that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Benchtime <= 0:
		return errors.New("benchtime must be positive")
	case c.Count < 1:
		return errors.New("count must be at least 1")
	}
	return nil
}

func main() {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("router", flag.ExitOnError)
	fs.DurationVar(&cfg.Benchtime, "benchtime", cfg.Benchtime, "run time of each benchmark")
	fs.IntVar(&cfg.Count, "count", cfg.Count, "runs per benchmark; the median is reported")
	fs.StringVar(&cfg.Readme, "readme", "", "replace the bench:router section of this markdown file with the results")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "router: unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

// result is one benchmark's median over its runs.
type result struct {
	name   string
	ns     float64
	allocs int64
}

func run(cfg Config, stdout, logw io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// testing.Benchmark reads its run time from the testing package's
	// own flag.
	testing.Init()
	if err := flag.Set("test.benchtime", cfg.Benchtime.String()); err != nil {
		return err
	}
	f, err := routertest.NewFleet()
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	r, reqs, routes := f.Router, f.Requests, f.Routes
	var results []result
	for _, s := range table.Strategies {
		rs := reqs[s]
		p := &router.Plan{}
		for i := range rs {
			r.Choose(&rs[i], p) // grow the plan's slices
			if len(p.Targets) == 0 {
				return fmt.Errorf("%s: no target for %s: %+v", s, rs[i].Model, p.Refusal)
			}
		}
		fmt.Fprintf(logw, "router: measuring %s\n", s)
		results = append(results, measure(cfg.Count, s, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r.Choose(&rs[i%len(rs)], p)
			}
		}))
	}
	names := make([]string, 0, len(routes))
	for n := range routes {
		names = append(names, n)
	}
	slices.Sort(names)
	var sink *table.Route
	fmt.Fprintln(logw, "router: measuring the baseline")
	base := measure(cfg.Count, "baseline: map lookup of the route", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			sink = routes[names[i%len(names)]]
		}
	})
	if sink == nil {
		return errors.New("baseline found no route")
	}

	var nss []float64
	var allocs int64
	var tbl strings.Builder
	fmt.Fprintln(&tbl, "| strategy | ns/decision | allocs/decision |")
	fmt.Fprintln(&tbl, "|---|---:|---:|")
	for _, res := range results {
		fmt.Fprintf(&tbl, "| %s | %.0f | %d |\n", res.name, res.ns, res.allocs)
		nss = append(nss, res.ns)
		allocs = max(allocs, res.allocs)
	}
	fmt.Fprintf(&tbl, "| %s | %.1f | %d |\n", base.name, base.ns, base.allocs)
	decide := median(nss)
	summary := fmt.Sprintf("router: decide_ns=%.0f allocs=%d baseline_ns=%.0f", decide, allocs, base.ns)
	note := fmt.Sprintf("decide_ns is the median over the %d strategies' ns/decision; allocs the most of any. "+
		"Median of %d runs of %s each, %s, %s/%s, %d CPUs, %s.",
		len(results), cfg.Count, cfg.Benchtime, time.Now().UTC().Format("2006-01-02 15:04 MST"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if cfg.Readme != "" {
		section := tbl.String() + "\n`" + summary + "`\n\n_" + note + "_\n"
		if err := readme.Replace(cfg.Readme, "router", section); err != nil {
			if !errors.Is(err, readme.ErrNoMarkers) {
				return err
			}
			fmt.Fprintf(logw, "router: warning: %s left untouched: %v\n", cfg.Readme, err)
		}
	}
	_, err = fmt.Fprintf(stdout, "%s\n%s\n\n%s\n", tbl.String(), note, summary)
	return err
}

// measure runs f count times and keeps the median ns/op and the most
// allocations per op.
func measure(count int, name string, f func(*testing.B)) result {
	res := result{name: name}
	var nss []float64
	for range count {
		br := testing.Benchmark(f)
		nss = append(nss, float64(br.T.Nanoseconds())/float64(max(br.N, 1)))
		res.allocs = max(res.allocs, br.AllocsPerOp())
	}
	res.ns = median(nss)
	return res
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
