// Command keys measures what keys' and tenants' rate limits and usage
// records add to a request's path: the same chat request through the
// edge's OpenAI surface (authentication, decoding, the gateway, an
// in-process upstream, encoding, the log line) with a key and tenant
// that have RPM and TPM limits and a usage recorder, and with a key that
// has none and no recorder, alternately in one loop so both see the same
// machine noise. Each run reports the median of each; the command
// reports the median over runs.
//
//	go run ./scripts/bench/keys [-duration 3s] [-count 3]
//
// The last line of stdout is the summary, for scripts:
//
//	keys: per_request_ns=<n> baseline_ns=<n>
//
// The budget is 2 µs added per request (per_request_ns − baseline_ns).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/usage"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Config is what a run measures.
type Config struct {
	// Duration is each run's length.
	Duration time.Duration
	// Count is the number of runs; the median is reported.
	Count int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Duration: 3 * time.Second, Count: 3} }

// Validate reports a config that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Duration <= 0:
		return errors.New("duration must be positive")
	case c.Count < 1:
		return errors.New("count must be at least 1")
	}
	return nil
}

func main() {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("keys", flag.ExitOnError)
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each run")
	fs.IntVar(&cfg.Count, "count", cfg.Count, "runs; the median is reported")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "keys: unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "keys:", err)
		os.Exit(1)
	}
}

const clientKey = "sk-bench-keys-0123456789"

const (
	body       = `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	completion = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`
)

type upstream struct{}

func (upstream) Do(context.Context, *llm.Request, string) (*llm.Response, error) {
	return &llm.Response{Body: []byte(completion), Usage: llm.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30}}, nil
}
func (upstream) Close() {}

// surface is the OpenAI surface over a gateway with tab.
func surface(tab *table.Table, extra func(*api.Config)) (http.Handler, func(), error) {
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil)) // the log line is formatted, as in production
	gw := gateway.New(gateway.Config{Logger: quiet, NewProvider: func(table.Provider) (provider.Provider, error) { return upstream{}, nil }})
	if err := gw.SetTable(tab); err != nil {
		return nil, nil, err
	}
	cfg := api.Config{Gateway: gw, Logger: quiet, MaxBodyBytes: 1 << 20, Node: "bench", Region: "local"}
	if extra != nil {
		extra(&cfg)
	}
	mux := http.NewServeMux()
	openai.New(cfg).Register(mux)
	return mux, gw.Close, nil
}

func tableWith(k table.Key, tn table.Tenant) *table.Table {
	sum := sha256.Sum256([]byte(clientKey))
	k.ID, k.Hash, k.Tenant, tn.ID = "k", "sha256:"+hex.EncodeToString(sum[:]), "acme", "acme"
	return &table.Table{
		Providers: []table.Provider{{ID: "p", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"}},
		Models:    []table.Model{{ID: "m"}},
		Routes:    []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "p"}}}},
		Prices:    []table.Price{{Provider: "p", Model: "m", Input: 1, Output: 2}},
		Keys:      []*table.Key{&k},
		Tenants:   []table.Tenant{tn},
	}
}

func run(cfg Config, stdout, logw io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dir, err := os.MkdirTemp("", "meridian-bench-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	uc := usage.DefaultConfig()
	uc.Node, uc.Dir = "bench", dir
	rec, err := usage.New(uc)
	if err != nil {
		return err
	}
	defer rec.Close()
	rec.Start(nil) // the spool alone: the bus's work is off the path either way
	lc := limits.DefaultConfig()
	lc.Node = "bench"
	lim, err := limits.New(lc)
	if err != nil {
		return err
	}
	const huge = 1 << 50 // limits that apply but never refuse
	full, closeFull, err := surface(tableWith(table.Key{RPM: huge, TPM: huge}, table.Tenant{RPM: huge, TPM: huge}),
		func(c *api.Config) { c.Limits, c.Usage = lim, rec })
	if err != nil {
		return err
	}
	defer closeFull()
	base, closeBase, err := surface(tableWith(table.Key{}, table.Tenant{}), nil)
	if err != nil {
		return err
	}
	defer closeBase()

	do := func(h http.Handler) (time.Duration, error) {
		r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+clientKey)
		r.Header.Set(api.HeaderRequestID, "req-bench")
		r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, r)
		d := time.Since(start)
		if w.Code != http.StatusOK {
			return 0, fmt.Errorf("status %d: %s", w.Code, w.Body)
		}
		return d, nil
	}
	var fulls, bases []float64
	for i := range cfg.Count {
		var f, b []time.Duration
		for end := time.Now().Add(cfg.Duration); time.Now().Before(end); {
			df, err := do(full)
			if err != nil {
				return fmt.Errorf("with limits and records: %w", err)
			}
			db, err := do(base)
			if err != nil {
				return fmt.Errorf("baseline: %w", err)
			}
			f, b = append(f, df), append(b, db)
		}
		mf, mb := median(f), median(b)
		fmt.Fprintf(logw, "keys: run %d: %d requests each, median %v with limits and records, %v without\n", i+1, len(f), mf, mb)
		fulls, bases = append(fulls, float64(mf)), append(bases, float64(mb))
	}
	slices.Sort(fulls)
	slices.Sort(bases)
	fmt.Fprintf(stdout, "keys: per_request_ns=%.0f baseline_ns=%.0f\n", fulls[len(fulls)/2], bases[len(bases)/2])
	return nil
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
