// Command peerdeath measures what a peer edge dying costs the requests
// routed to it: issue 22's scenario on loopback.
//
//	go run ./scripts/bench/peerdeath [-rate 20] [-duration 8s] [-kill-at 3s] [-nofix]
//
// Three edges run in this process with gossip and real QUIC links:
// edge-2 and edge-3 route gpt-4o-mini to edge-1 over a link first, then
// to a mock provider. A client sends edge-2 -rate requests a second
// (open loop, non-streamed, the mock answering after 20 ms). The run is
// made twice: once as it is, once with edge-1 killed at -kill-at. The
// kill is in-process: edge-1's link socket closes before anything else,
// so no QUIC close reaches anyone (the survivors hear pure silence), and
// its gossip stops without leaving.
//
// Reported for each run: requests, failures, and the time each request
// took over the median of the run without a kill (max and p99); for the
// kill, how long until edge-1 was out of the routing plans of both
// edge-2 (its own link) and edge-3 (which never dialled edge-1 and learns
// it from gossip's suspicion). -nofix turns link pings and the peer
// time-to-first-byte budget off, which is how links behaved before: only
// QUIC's 5 s idle timeout noticed a dead peer.
//
// The last line is machine-readable, for the kill run:
//
//	peerdeath: requests=<n> failed=<n> max_added_ms=<n> p99_added_ms=<n> out_of_routing_ms=<n>
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// Config is the benchmark's settings.
type Config struct {
	// Rate is requests per second sent to edge-2.
	Rate int
	// Duration is how long each run sends requests.
	Duration time.Duration
	// KillAt is when, into the kill run, edge-1 is killed.
	KillAt time.Duration
	// NoFix turns link pings and the peer TTFB budget off.
	NoFix bool
}

func main() {
	var cfg Config
	flag.IntVar(&cfg.Rate, "rate", 20, "requests per second to edge-2")
	flag.DurationVar(&cfg.Duration, "duration", 8*time.Second, "how long each run sends requests")
	flag.DurationVar(&cfg.KillAt, "kill-at", 3*time.Second, "when edge-1 is killed in the kill run")
	flag.BoolVar(&cfg.NoFix, "nofix", false, "turn link pings and the peer TTFB budget off (links as before issue 22)")
	flag.Parse()
	if err := run(context.Background(), cfg); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg Config) error {
	if cfg.Rate < 1 || cfg.KillAt <= 0 || cfg.Duration <= cfg.KillAt {
		return errors.New("peerdeath: need a positive rate and kill-at below duration")
	}
	calm, err := scenario(ctx, cfg, false)
	if err != nil {
		return fmt.Errorf("run without a kill: %w", err)
	}
	base := calm.median()
	killed, err := scenario(ctx, cfg, true)
	if err != nil {
		return fmt.Errorf("run with a kill: %w", err)
	}
	mode := "pings and TTFB budget on"
	if cfg.NoFix {
		mode = "-nofix: pings and TTFB budget off"
	}
	fmt.Printf("peerdeath: %d requests/s for %v, edge-1 killed %v in (%s); added = time over the no-kill median %.1f ms\n",
		cfg.Rate, cfg.Duration, cfg.KillAt, mode, ms(base))
	fmt.Printf("without a kill: %s\n", calm.line(base))
	fmt.Printf("with the kill:  %s; out of routing on edge-2 after %.0f ms (%s), on edge-3 after %.0f ms (%s)\n",
		killed.line(base), ms(killed.out["edge-2"]), killed.why["edge-2"], ms(killed.out["edge-3"]), killed.why["edge-3"])
	fmt.Printf("peerdeath: %s out_of_routing_ms=%.0f\n", killed.line(base), ms(max(killed.out["edge-2"], killed.out["edge-3"])))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// result is one run.
type result struct {
	took   []time.Duration
	failed int
	// out is, per surviving edge, when edge-1 left its plan after the
	// kill; why is the plan's reason.
	out map[string]time.Duration
	why map[string]string
}

func (r *result) median() time.Duration {
	s := slices.Clone(r.took)
	slices.Sort(s)
	return s[len(s)/2]
}

func (r *result) line(base time.Duration) string {
	added := make([]time.Duration, len(r.took))
	for i, t := range r.took {
		added[i] = max(t-base, 0)
	}
	slices.Sort(added)
	p99 := added[min(len(added)-1, len(added)*99/100)]
	return fmt.Sprintf("requests=%d failed=%d max_added_ms=%.0f p99_added_ms=%.0f", len(r.took), r.failed, ms(added[len(added)-1]), ms(p99))
}

// edge is one running node.
type edge struct {
	n    *node.Node
	url  string
	stop context.CancelFunc
	done chan error
}

func scenario(ctx context.Context, cfg Config, kill bool) (*result, error) {
	dir, err := os.MkdirTemp("", "peerdeath")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := pki.WriteCA(dir, "bench-cluster", time.Hour); err != nil {
		return nil, err
	}
	for _, id := range []string{"edge-1", "edge-2", "edge-3"} {
		if err := pki.WriteNodeCert(dir, dir, id, []string{"127.0.0.1"}, time.Hour); err != nil {
			return nil, err
		}
	}
	mcfg := providermock.DefaultConfig()
	mcfg.APIKey = "sk-bench"
	mock, err := providermock.New(mcfg)
	if err != nil {
		return nil, err
	}
	base, err := mock.Start("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer mock.Close()

	key := table.Secret("AAECAwQFBgcICQoLDA0ODw==")
	var edges []*edge
	defer func() {
		for _, e := range edges {
			e.stop()
			<-e.done
		}
	}()
	start := func(id, peerAddr string, seeds ...string) (*edge, error) {
		c := config.DefaultConfig()
		c.NodeID, c.Region, c.Listen = id, "eu-west", "127.0.0.1:0"
		c.Link.Enabled, c.Link.Listen = true, "127.0.0.1:0"
		c.Link.CAFile = filepath.Join(dir, pki.CACertFile)
		c.Link.CertFile, c.Link.KeyFile = filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key")
		if cfg.NoFix {
			c.Link.PingInterval = time.Hour
			c.Routing.PeerTTFBFloor = time.Hour
		}
		c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", Advertise: "127.0.0.1",
			Cluster: "meridian-bench", Profile: "local", Keys: []table.Secret{key}, Seeds: seeds}
		c.Table = table.Table{
			Providers: []table.Provider{{ID: "mock", Kind: table.KindOpenAI, BaseURL: base + "/v1", APIKey: table.Secret(mcfg.APIKey)}},
			Models:    []table.Model{{ID: "gpt-4o-mini"}},
			Routes:    []*table.Route{{Model: "gpt-4o-mini", Targets: []table.Target{{Provider: "mock"}}}},
		}
		if peerAddr != "" {
			c.Table.Providers = append(c.Table.Providers, table.Provider{ID: "one", Kind: table.KindPeer, BaseURL: "meridian-link://" + peerAddr + "/edge-1"})
			c.Table.Routes[0].Targets = []table.Target{{Provider: "one", Model: "gpt-4o-mini"}, {Provider: "mock"}}
		}
		n, err := node.New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return nil, err
		}
		if err := n.Listen(); err != nil {
			return nil, err
		}
		rctx, cancel := context.WithCancel(ctx)
		e := &edge{n: n, url: "http://" + n.Addr().String(), stop: cancel, done: make(chan error, 1)}
		go func() { e.done <- n.Run(rctx) }()
		edges = append(edges, e)
		return e, poll(30*time.Second, id+" ready", func() bool {
			resp, err := http.Get(e.url + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	one, err := start("edge-1", "")
	if err != nil {
		return nil, err
	}
	linkAddr := one.n.Link().Addr().String()
	two, err := start("edge-2", linkAddr, one.n.Gossip().Addr())
	if err != nil {
		return nil, err
	}
	three, err := start("edge-3", linkAddr, one.n.Gossip().Addr())
	if err != nil {
		return nil, err
	}
	for _, e := range []*edge{two, three} {
		if err := poll(30*time.Second, "edge-1 first in the plan", func() bool {
			first, _ := plan(e)
			return first == "peer/edge-1"
		}); err != nil {
			return nil, err
		}
	}

	res := &result{out: map[string]time.Duration{}, why: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	send := func() {
		defer wg.Done()
		t0 := time.Now()
		resp, err := http.Post(two.url+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi #mock latency_ms=20"}]}`))
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		took := time.Since(t0)
		mu.Lock()
		res.took = append(res.took, took)
		if !ok {
			res.failed++
		}
		mu.Unlock()
	}
	// A few requests first, so the link is warm and edge-1's TTFT known.
	for range 5 {
		wg.Add(1)
		send()
	}
	res.took, res.failed = nil, 0

	began := time.Now()
	every := time.Second / time.Duration(cfg.Rate)
	var killed time.Time
	for i := 0; ; i++ {
		next := began.Add(time.Duration(i) * every)
		if next.Sub(began) >= cfg.Duration {
			break
		}
		if kill && killed.IsZero() && next.Sub(began) >= cfg.KillAt {
			one.n.Link().Kill()
			one.n.Gossip().Kill()
			killed = time.Now()
			go watch(res, &mu, killed, two, three)
		}
		time.Sleep(time.Until(next))
		wg.Add(1)
		go send()
	}
	wg.Wait()
	if kill {
		// The watcher gives up 10 s after the kill at most.
		if err := poll(15*time.Second, "the watcher", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(res.why) == 2
		}); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// watch records when edge-1 leaves each survivor's plan.
func watch(res *result, mu *sync.Mutex, killed time.Time, edges ...*edge) {
	names := []string{"edge-2", "edge-3"}
	for time.Since(killed) < 10*time.Second {
		mu.Lock()
		n := len(res.why)
		mu.Unlock()
		if n == len(edges) {
			return
		}
		for i, e := range edges {
			mu.Lock()
			_, done := res.why[names[i]]
			mu.Unlock()
			if done {
				continue
			}
			if _, why := plan(e); why != "" {
				mu.Lock()
				res.out[names[i]], res.why[names[i]] = time.Since(killed), why
				mu.Unlock()
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	for _, name := range names {
		if _, ok := res.why[name]; !ok {
			res.out[name], res.why[name] = 10*time.Second, "still routed after 10 s"
		}
	}
	mu.Unlock()
}

// plan reads an edge's dry run: its first target, and why peer/edge-1 is
// excluded ("" when it is not).
func plan(e *edge) (first, why string) {
	resp, err := http.Get(e.url + "/v1/meridian/route?model=gpt-4o-mini")
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var p struct {
		Targets []struct {
			Target string `json:"target"`
		} `json:"targets"`
		Excluded []struct {
			Target string `json:"target"`
			Reason string `json:"reason"`
		} `json:"excluded"`
	}
	if json.NewDecoder(resp.Body).Decode(&p) != nil {
		return "", ""
	}
	if len(p.Targets) > 0 {
		first = p.Targets[0].Target
	}
	for _, x := range p.Excluded {
		if x.Target == "peer/edge-1" {
			why = x.Reason
		}
	}
	return first, why
}

// poll checks cond every 5 ms until it holds or d passes.
func poll(d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
