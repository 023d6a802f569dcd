// Command gateway benchmarks the edge against a minimal reverse proxy.
// It builds the edge, the mock provider and minproxy, starts each as its
// own process on loopback, and measures three paths to the same mock:
// direct, through minproxy and through the edge. From the differences it
// reports the latency the edge adds next to what a bare proxy adds, its
// throughput, streaming time to first token, errors and memory.
//
//	go run ./scripts/bench/gateway [-quick] [-readme README.md] [-out FILE]
//
// The last line of stdout is the summary, for scripts:
//
//	gateway: added_p50_ratio=1.12 added_p99_ratio=1.30 max_rps_ratio=0.91 stream_ttft_added_ratio=1.05 errors=0 rss_mb=21
//
// It must never leave a child process behind, fake a number or run an
// unbounded loop; everything it starts listens on 127.0.0.1 only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"syscall"
	"time"
)

// Config is one benchmark run's plan. Durations are per path and
// scenario; each is split into Rounds interleaved segments.
type Config struct {
	// Quick marks the short plan from QuickConfig, for the report.
	Quick bool
	// Readme, if set, is the file whose bench:gateway section is replaced
	// with the results.
	Readme string
	// Out, if set, is a file the report and summary line are written to.
	Out string
	// EdgeBin, if set, is a prebuilt edge binary to measure instead of
	// building ./edge/cmd/meridian-edge (for example one built with a
	// profiler).
	EdgeBin string

	// MockChunks is the mock's default answer length, in content chunks.
	MockChunks int
	// Rates are the open-loop send rates, in requests per second. The
	// headline latency ratios come from the highest.
	Rates []float64
	// Warmup is the unmeasured load each path gets before a scenario.
	Warmup time.Duration
	// OpenDuration is the measured open-loop time per path and rate.
	OpenDuration time.Duration
	// Concurrencies are the closed-loop concurrencies, in requests.
	Concurrencies []int
	// ClosedDuration is the measured closed-loop time per path and
	// concurrency.
	ClosedDuration time.Duration
	// StreamRequests is the number of measured streams per path.
	StreamRequests int
	// StreamConcurrencies are the numbers of streams open at once, one
	// scenario each. The headline TTFT ratio comes from the first: one
	// stream at a time isolates what a hop adds, while higher counts on
	// these two cores mostly measure how the three processes share them.
	StreamConcurrencies []int
	// StreamChunks is the content chunks of each measured stream.
	StreamChunks int
	// Rounds is how many interleaved segments each scenario is split
	// into; path order rotates every round so drift hits all paths alike.
	Rounds int
	// StartTimeout bounds how long each child may take to become ready.
	StartTimeout time.Duration
}

// DefaultConfig returns the full plan: about two minutes.
func DefaultConfig() Config {
	return Config{
		MockChunks:          16,
		Rates:               []float64{500, 1000},
		Warmup:              time.Second,
		OpenDuration:        8 * time.Second,
		Concurrencies:       []int{16, 64},
		ClosedDuration:      6 * time.Second,
		StreamRequests:      200,
		StreamConcurrencies: []int{1, 4},
		StreamChunks:        200,
		Rounds:              8,
		StartTimeout:        20 * time.Second,
	}
}

// QuickConfig returns a short plan, about two seconds per measurement,
// for checking that everything works.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Quick = true
	c.Warmup = 300 * time.Millisecond
	c.OpenDuration = 2 * time.Second
	c.ClosedDuration = 2 * time.Second
	c.StreamRequests = 60
	c.Rounds = 2
	return c
}

// Validate checks the plan.
func (c *Config) Validate() error {
	switch {
	case c.MockChunks < 1 || c.StreamChunks < 1:
		return errors.New("chunk counts must be at least 1")
	case len(c.Rates) == 0 || len(c.Concurrencies) == 0:
		return errors.New("need at least one rate and one concurrency")
	case c.Warmup < 0 || c.OpenDuration <= 0 || c.ClosedDuration <= 0 || c.StartTimeout <= 0:
		return errors.New("durations must be positive")
	case c.StreamRequests < 1 || len(c.StreamConcurrencies) == 0 || slices.Min(c.StreamConcurrencies) < 1:
		return errors.New("stream requests and concurrency must be at least 1")
	case c.Rounds < 1:
		return errors.New("rounds must be at least 1")
	}
	for _, r := range c.Rates {
		if !(r > 0) {
			return fmt.Errorf("rate %v is not positive", r)
		}
		if r*c.OpenDuration.Seconds()/float64(c.Rounds) < 1 {
			return fmt.Errorf("rate %v plans no requests per round", r)
		}
	}
	for _, n := range c.Concurrencies {
		if n < 1 {
			return fmt.Errorf("concurrency %d is below 1", n)
		}
	}
	return nil
}

func main() {
	var quick bool
	var readme, out, edgeBin string
	flag.BoolVar(&quick, "quick", false, "short run (~2s per measurement) to check that everything works")
	flag.StringVar(&readme, "readme", "", "replace the bench:gateway section of this markdown file with the results")
	flag.StringVar(&out, "out", "", "also write the report to this file")
	flag.StringVar(&edgeBin, "edge-bin", "", "measure this prebuilt edge binary instead of building one")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gateway: unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	cfg := DefaultConfig()
	if quick {
		cfg = QuickConfig()
	}
	cfg.Readme, cfg.Out, cfg.EdgeBin = readme, out, edgeBin

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		stop()
		os.Exit(1)
	}
}

// run builds and starts the three processes, measures, stops them and
// reports. Progress goes to logw; the report and summary to stdout.
func run(ctx context.Context, cfg Config, stdout, logw io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// The generator shares two cores with what it measures; collecting
	// its small heap less often leaves fewer pauses in its samples.
	debug.SetGCPercent(400)
	dir, err := os.MkdirTemp("", "meridian-bench-gateway-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintln(logw, "gateway: building binaries")
	bins, err := build(ctx, dir, cfg.EdgeBin)
	if err != nil {
		return err
	}
	f := &fleet{log: logw, timeout: cfg.StartTimeout}
	defer f.stopAll() // also on error and on a signal, which ends ctx

	mock, err := f.startAnnounced(ctx, "mockprovider", bins.mock, "mockprovider: listening on ",
		"-addr", "127.0.0.1:0", "-chunks", fmt.Sprint(cfg.MockChunks))
	if err != nil {
		return err
	}
	proxy, err := f.startAnnounced(ctx, "minproxy", bins.proxy, "minproxy: listening on ",
		"-listen", "127.0.0.1:0", "-upstream", mock.url)
	if err != nil {
		return err
	}
	edge, err := f.startEdge(ctx, bins.edge, dir, mock.url)
	if err != nil {
		return err
	}
	var urls [numPaths]string
	urls[direct], urls[proxied], urls[edged] = mock.url, proxy.url, edge.url
	if err := checkPaths(ctx, urls); err != nil {
		return err
	}

	res, err := measure(ctx, cfg, urls, logw)
	if err != nil {
		return err
	}
	res.rss, res.hwm, err = memory(edge.cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("edge memory: %w", err)
	}
	if s := edge.stderr.String(); s != "" {
		fmt.Fprintf(logw, "gateway: the edge logged (last %d bytes):\n%s\n", len(s), s)
	}
	f.stopAll()

	rep := newReport(cfg, res, time.Now())
	text := rep.markdown() + "\n" + rep.note() + "\n"
	summary := rep.summary()
	if cfg.Out != "" {
		if err := os.WriteFile(cfg.Out, []byte(text+"\n"+summary+"\n"), 0o644); err != nil {
			return err
		}
	}
	if cfg.Readme != "" {
		if err := readme.Replace(cfg.Readme, "gateway", text); err != nil {
			if !errors.Is(err, readme.ErrNoMarkers) {
				return err
			}
			fmt.Fprintf(logw, "gateway: warning: %s left untouched: %v\n", cfg.Readme, err)
		}
	}
	_, err = fmt.Fprint(stdout, text+"\n"+summary+"\n")
	return err
}
