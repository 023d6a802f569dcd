package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/scripts/bench/loadgen"
)

// path is one way to reach the mock.
type path int

const (
	direct  path = iota // straight to the mock
	proxied             // through minproxy
	edged               // through the edge
	numPaths
)

var pathNames = [numPaths]string{"direct", "minproxy", "edge"}

// kind is a scenario's load shape.
type kind int

const (
	openLoop kind = iota
	closedLoop
	streaming
)

// scenario is one load shape measured on every path.
type scenario struct {
	kind kind
	rate float64 // openLoop: requests per second
	conc int     // closedLoop and streaming: requests at once
	res  [numPaths]loadgen.Result
}

func (s *scenario) name(cfg Config) string {
	switch s.kind {
	case openLoop:
		return fmt.Sprintf("open %s req/s", thousands(int64(s.rate)))
	case closedLoop:
		return fmt.Sprintf("closed c=%d", s.conc)
	}
	return fmt.Sprintf("stream %d chunks, c=%d", cfg.StreamChunks, s.conc)
}

// results is everything a run measured.
type results struct {
	scenarios []scenario
	// warmErrors counts failures during warm-ups, per path.
	warmErrors [numPaths]int
	// rss and hwm are the edge's resident set after the run and its
	// peak, in kB.
	rss, hwm int64
}

// errors is every failed request on path p, warm-ups included.
func (r *results) errors(p path) int {
	n := r.warmErrors[p]
	for i := range r.scenarios {
		n += r.scenarios[i].res[p].Errors
	}
	return n
}

// body is a chat request; the mock reads directives from its text.
func body(stream bool, text string) []byte {
	return fmt.Appendf(nil, `{"model":"gpt-4o-mini","stream":%t,"messages":[{"role":"user","content":%q}]}`, stream, text)
}

// measure runs every scenario on every path. Each scenario warms every
// path up, then splits its measurement into cfg.Rounds segments per path,
// rotating the path order each round (and each scenario), so a noisy
// neighbour or thermal drift lands on all paths alike; the segments are
// pooled.
func measure(ctx context.Context, cfg Config, urls [numPaths]string, logw io.Writer) (results, error) {
	maxConc := 1
	for _, c := range cfg.StreamConcurrencies {
		maxConc = max(maxConc, c)
	}
	for _, c := range cfg.Concurrencies {
		maxConc = max(maxConc, c)
	}
	client := loadgen.NewClient(max(1024, maxConc))
	defer client.CloseIdleConnections()

	plain := body(false, "hi")
	stream := body(true, fmt.Sprintf("hi #mock chunks=%d", cfg.StreamChunks))
	target := func(p path, b []byte) loadgen.Target {
		return loadgen.Target{URL: urls[p] + "/v1/chat/completions", Body: b}
	}

	var res results
	for _, r := range cfg.Rates {
		res.scenarios = append(res.scenarios, scenario{kind: openLoop, rate: r})
	}
	for _, c := range cfg.Concurrencies {
		res.scenarios = append(res.scenarios, scenario{kind: closedLoop, conc: c})
	}
	for _, c := range cfg.StreamConcurrencies {
		res.scenarios = append(res.scenarios, scenario{kind: streaming, conc: c})
	}

	for si := range res.scenarios {
		s := &res.scenarios[si]
		// one runs one of rounds segments of the scenario on p, or its
		// warm-up.
		one := func(p path, rounds int, warm bool) (loadgen.Result, error) {
			switch s.kind {
			case openLoop:
				d := cfg.OpenDuration / time.Duration(rounds)
				if warm {
					d = cfg.Warmup
				}
				return client.Open(ctx, target(p, plain), loadgen.OpenLoop{Rate: s.rate, Duration: d})
			case closedLoop:
				d := cfg.ClosedDuration / time.Duration(rounds)
				if warm {
					d = cfg.Warmup
				}
				// Far above what two cores serve, and a bound on the
				// samples allocated up front.
				maxReq := int(100_000*d.Seconds()) + 1000
				return client.Closed(ctx, target(p, plain), loadgen.ClosedLoop{Concurrency: s.conc, Duration: d, MaxRequests: maxReq})
			}
			n := (cfg.StreamRequests + rounds - 1) / rounds
			if warm {
				n = 4 * s.conc
			}
			return client.Stream(ctx, target(p, stream), loadgen.StreamRun{Requests: n, Concurrency: s.conc})
		}

		name := s.name(cfg)
		if cfg.Warmup > 0 {
			for p := range numPaths {
				r, err := one(p, 1, true)
				if err != nil {
					return res, fmt.Errorf("%s: %s warm-up: %w", name, pathNames[p], err)
				}
				res.warmErrors[p] += r.Errors
			}
		}
		var parts [numPaths][]loadgen.Result
		for round := range cfg.Rounds {
			order := make([]string, 0, numPaths)
			for k := range numPaths {
				p := (path(round) + k + path(si)) % numPaths
				runtime.GC() // start every segment with the generator's heap alike
				r, err := one(p, cfg.Rounds, false)
				if err != nil {
					return res, fmt.Errorf("%s: %s: %w", name, pathNames[p], err)
				}
				parts[p] = append(parts[p], r)
				order = append(order, fmt.Sprintf("%s p50=%s", pathNames[p], micros(r.P50())))
			}
			fmt.Fprintf(logw, "gateway: %s round %d/%d: %s\n", name, round+1, cfg.Rounds, strings.Join(order, ", "))
		}
		for p := range numPaths {
			s.res[p] = loadgen.Merge(parts[p]...)
			if r := s.res[p]; r.Errors > 0 || r.Unsent > 0 {
				fmt.Fprintf(logw, "gateway: %s: %s: %d errors, %d unsent; first: %s\n", name, pathNames[p], r.Errors, r.Unsent, r.FirstError)
			}
		}
	}
	return res, nil
}

// checkPaths sends one plain and one streamed request on every path and
// fails unless all work, so a broken setup is not measured as slowness.
func checkPaths(ctx context.Context, urls [numPaths]string) error {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	lc := loadgen.NewClient(4)
	defer lc.CloseIdleConnections()
	for p := range numPaths {
		u := urls[p] + "/v1/chat/completions"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(string(body(false, "hi"))))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("check %s: %w", pathNames[p], err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"chat.completion"`) {
			return fmt.Errorf("check %s: status %d: %.300s", pathNames[p], resp.StatusCode, b)
		}
		if p == edged && resp.Header.Get("X-Meridian-Overhead-Us") == "" {
			return fmt.Errorf("check edge: response lacks x-meridian-overhead-us; is %s the edge?", urls[p])
		}
		r, err := lc.Stream(ctx, loadgen.Target{URL: u, Body: body(true, "hi #mock chunks=3")}, loadgen.StreamRun{Requests: 1, Concurrency: 1})
		if err != nil {
			return fmt.Errorf("check %s stream: %w", pathNames[p], err)
		}
		if r.OK != 1 {
			return fmt.Errorf("check %s stream: %s", pathNames[p], r.FirstError)
		}
	}
	return nil
}
