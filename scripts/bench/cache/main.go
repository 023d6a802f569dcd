// Command cache measures the edge cache on a replayed FAQ-like trace: a
// generated sequence of Zipf-distributed questions, some paraphrased,
// sent with temperature 0 by a few concurrent clients to a real edge
// (edge/node, its HTTP server, the cache on) whose one route goes to a
// mock provider that takes a realistic time to answer. The baseline is
// measured in the same run: the requests the cache missed are the
// provider's path.
//
//	go run ./scripts/bench/cache [-requests 2000] [-questions 300] [-latency 300ms] [-workers 8]
//
// It reports the hit ratio, the p50 latency of a hit and of a miss as
// the client sees them (loopback HTTP included), the p50 of a hit
// inside the edge (x-meridian-overhead-us), and the cost saved: the
// hits' tokens at the route's price, against the whole trace's. The last
// line of stdout is the summary, for scripts:
//
//	cache: hit_ratio=<x> hit_p50_us=<n> miss_p50_us=<n> saved_pct=<x>
//
// Paraphrases miss the exact cache by design: they are what a semantic
// cache would add. The run is bounded by -timeout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// Config is what a run measures.
type Config struct {
	Trace TraceConfig
	// Latency is the mock provider's time before it answers.
	Latency time.Duration
	// Workers is the number of concurrent clients.
	Workers int
	// Timeout bounds the whole run.
	Timeout time.Duration
}

// DefaultConfig returns the defaults: the default trace, a 300 ms
// provider, 8 clients, at most 5 minutes.
func DefaultConfig() Config {
	return Config{Trace: DefaultTraceConfig(), Latency: 300 * time.Millisecond, Workers: 8, Timeout: 5 * time.Minute}
}

// Validate reports a config that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Trace.Requests < 1 || c.Trace.Requests > 1_000_000:
		return errors.New("requests must be between 1 and 1,000,000")
	case c.Trace.Questions < 2:
		return errors.New("questions must be at least 2")
	case !(c.Trace.ZipfS > 1):
		return errors.New("zipf s must be above 1")
	case !(c.Trace.Paraphrased >= 0 && c.Trace.Paraphrased <= 1):
		return errors.New("paraphrased must be between 0 and 1")
	case c.Latency < 0:
		return errors.New("latency must not be negative")
	case c.Workers < 1:
		return errors.New("workers must be at least 1")
	case c.Timeout <= 0:
		return errors.New("timeout must be positive")
	}
	return nil
}

func main() {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("cache", flag.ExitOnError)
	fs.IntVar(&cfg.Trace.Requests, "requests", cfg.Trace.Requests, "requests in the trace")
	fs.IntVar(&cfg.Trace.Questions, "questions", cfg.Trace.Questions, "distinct questions")
	fs.Float64Var(&cfg.Trace.ZipfS, "zipf", cfg.Trace.ZipfS, "Zipf skew of question popularity (> 1)")
	fs.Float64Var(&cfg.Trace.Paraphrased, "paraphrased", cfg.Trace.Paraphrased, "share of requests worded as a paraphrase")
	fs.Uint64Var(&cfg.Trace.Seed, "seed", cfg.Trace.Seed, "trace seed")
	fs.DurationVar(&cfg.Latency, "latency", cfg.Latency, "the mock provider's time to answer")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent clients")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound on the whole run")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "cache: unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	if err := run(context.Background(), cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cache:", err)
		os.Exit(1)
	}
}

// The route's price, USD per 1M tokens; a hit is free (no cached price).
const priceIn, priceOut = 0.15, 0.60

// result is what one request measured.
type result struct {
	status     string // x-meridian-cache
	latency    time.Duration
	overheadUs int64
	in, out    int
}

func run(ctx context.Context, cfg Config, stdout, logw io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	mcfg := providermock.DefaultConfig()
	mcfg.APIKey, mcfg.Latency = "sk-bench-cache-provider", cfg.Latency
	mock, err := providermock.New(mcfg)
	if err != nil {
		return err
	}
	base, err := mock.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer mock.Close()

	c := config.DefaultConfig()
	c.NodeID, c.Listen, c.LogLevel = "bench-cache", "127.0.0.1:0", "warn"
	c.Cache.MaxBytes = 64 << 20
	c.Table = table.Table{
		Providers: []table.Provider{{ID: "mock", Kind: table.KindOpenAI, BaseURL: base + "/v1", APIKey: table.Secret(mcfg.APIKey)}},
		Models:    []table.Model{{ID: "faq-bot"}},
		Routes:    []*table.Route{{Model: "faq-bot", Targets: []table.Target{{Provider: "mock", Model: "gpt-4o-mini"}}}},
		Prices:    []table.Price{{Provider: "mock", Model: "gpt-4o-mini", Input: priceIn, Output: priceOut}},
	}
	n, err := node.New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	if err := n.Listen(); err != nil {
		return err
	}
	nctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx) }()
	defer func() { stop(); <-done }()
	url := "http://" + n.Addr().String()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the edge was not ready within 30s")
		}
	}

	trace := Generate(cfg.Trace)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Workers}, Timeout: 30 * time.Second}
	results := make([]result, len(trace))
	jobs := make(chan int)
	errc := make(chan error, cfg.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r, err := send(ctx, client, url, trace[i].Text)
				if err != nil {
					errc <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				results[i] = r
			}
		}()
	}
	var sendErr error
feed:
	for i := range trace {
		select {
		case jobs <- i:
		case sendErr = <-errc:
			break feed
		case <-ctx.Done():
			sendErr = fmt.Errorf("the run exceeded -timeout %v", cfg.Timeout)
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if sendErr == nil {
		select {
		case sendErr = <-errc:
		default:
		}
	}
	if sendErr != nil {
		return sendErr
	}
	elapsed := time.Since(start)

	var hits, misses []time.Duration
	var hitOverhead []int64
	var full, paid float64
	for _, r := range results {
		cost := float64(r.in)*priceIn + float64(r.out)*priceOut
		full += cost
		switch r.status {
		case "hit":
			hits = append(hits, r.latency)
			hitOverhead = append(hitOverhead, r.overheadUs)
		case "miss":
			misses = append(misses, r.latency)
			paid += cost
		default:
			return fmt.Errorf("a request the cache did not consider (x-meridian-cache %q)", r.status)
		}
	}
	if len(hits) == 0 || len(misses) == 0 {
		return fmt.Errorf("%d hits and %d misses: the trace needs both", len(hits), len(misses))
	}
	paraphrased := 0
	for _, it := range trace {
		if it.Variant > 0 {
			paraphrased++
		}
	}
	hp, mp := p50(hits), p50(misses)
	slices.Sort(hitOverhead)
	ratio := float64(len(hits)) / float64(len(results))
	saved := 100 * (full - paid) / full
	fmt.Fprintf(logw, "cache: %d requests (%d paraphrased) over %d questions (Zipf s=%.2f) in %v with %d clients; provider latency %v\n",
		len(results), paraphrased, cfg.Trace.Questions, cfg.Trace.ZipfS, elapsed.Round(time.Millisecond), cfg.Workers, cfg.Latency)
	fmt.Fprintf(logw, "cache: %d hits, %d misses; p50 hit %v, p50 miss %v (%.0fx); p50 of a hit inside the edge %dus; cost %.6f USD of %.6f\n",
		len(hits), len(misses), hp, mp, float64(mp)/float64(hp), hitOverhead[len(hitOverhead)/2], paid/1e6, full/1e6)
	fmt.Fprintf(stdout, "cache: hit_ratio=%.3f hit_p50_us=%d miss_p50_us=%d saved_pct=%.1f\n", ratio, hp.Microseconds(), mp.Microseconds(), saved)
	return nil
}

// send asks one question, deterministically, and measures the answer.
func send(ctx context.Context, client *http.Client, url, text string) (result, error) {
	body, _ := json.Marshal(map[string]any{"model": "faq-bot", "temperature": 0, "max_tokens": 128,
		"messages": []map[string]string{{"role": "system", "content": "You answer questions about our product briefly."}, {"role": "user", "content": text}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{}, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return result{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return result{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var cc struct {
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &cc); err != nil {
		return result{}, fmt.Errorf("answer: %w", err)
	}
	over, _ := strconv.ParseInt(resp.Header.Get("X-Meridian-Overhead-Us"), 10, 64)
	return result{status: resp.Header.Get("X-Meridian-Cache"), latency: d, overheadUs: over, in: cc.Usage.Prompt, out: cc.Usage.Completion}, nil
}

func p50(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}
