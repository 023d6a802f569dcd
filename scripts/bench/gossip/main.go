// Command gossip benchmarks edge membership gossip (edge/gossip) in one
// process on loopback, with the profile the edge ships (gossip.DefaultConfig:
// memberlist LAN timers, GossipInterval 100 ms, RetransmitMult 8). Timers
// are not compressed; the report says so.
//
// For each cluster size it measures:
//
//   - convergence: first node started → every node sees every node alive;
//
//   - steady-state cost: gossip bytes sent per node per second (counted by
//     the node's transport wrapper, after encryption) and process CPU per
//     node, over a quiet window;
//
//   - dissemination: a metadata change on one node → each other node sees
//     it (p50/p99 over every node of every trial, plus stragglers that
//     never saw it within the trial bound);
//
//   - failure detection: hard kill (no leave) → every survivor marks the
//     node dead, next to gossip.DetectionBound.
//
//     go run ./scripts/bench/gossip [-quick] [-n 10,30,100] [-window 30s] [-trials 10]
//
// The last line of stdout is the summary for n=30 (or the largest n run):
//
//	gossip: n=30 dissem_p99_ms=480 detect_ms=5200 bytes_per_s_per_node=310
//
// Every loop is bounded in count and time; everything listens on 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/edge/gossip"
)

// Config is one benchmark run's plan.
type Config struct {
	// Sizes are the cluster sizes, in nodes.
	Sizes []int
	// Window is the steady-state measurement window.
	Window time.Duration
	// Trials is the number of metadata changes per size.
	Trials int
	// Quick marks the short plan, for the report.
	Quick bool
}

// result is one cluster size's measurements.
type result struct {
	n                    int
	converge             time.Duration
	dissemP50, dissemP99 time.Duration
	stragglers           int
	samples              int
	detect, bound        time.Duration
	detectTimedOut       bool
	bytesPerSec          float64
	cpuPct               float64
}

func main() {
	var (
		sizes  = flag.String("n", "10,30,100", "comma-separated cluster sizes")
		quick  = flag.Bool("quick", false, "sizes 10,30 with a shorter window and fewer trials")
		window = flag.Duration("window", 30*time.Second, "steady-state window (one LAN push-pull interval)")
		trials = flag.Int("trials", 10, "metadata changes per size")
	)
	flag.Parse()
	cfg := Config{Window: *window, Trials: *trials, Quick: *quick}
	if *quick {
		*sizes, cfg.Window, cfg.Trials = "10,30", 10*time.Second, 5
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 3 || n > 500 {
			fmt.Fprintf(os.Stderr, "bad size %q (3..500)\n", s)
			os.Exit(2)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "gossip bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config) error {
	var results []result
	for _, n := range cfg.Sizes {
		fmt.Fprintf(os.Stderr, "n=%d ...\n", n)
		r, err := measure(ctx, cfg, n)
		if err != nil {
			return fmt.Errorf("n=%d: %w", n, err)
		}
		results = append(results, r)
	}
	d := gossip.DefaultConfig()
	fmt.Printf("Gossip, one process on loopback, profile %s (not compressed: probe 1 s, probe timeout 500 ms, "+
		"gossip %v, retransmit mult %d, push-pull 30 s), AES keyring on, %d trials; steady state over %v "+
		"starting 30 s after the first node (push-pull included).\n\n",
		d.Profile, d.GossipInterval, d.RetransmitMult, cfg.Trials, cfg.Window)
	fmt.Println("| nodes | converge | dissem p50 | dissem p99 | stragglers | detect | detect bound | bytes/s/node | CPU/node |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		det := ms(r.detect)
		if r.detectTimedOut {
			det = ">" + det
		}
		fmt.Printf("| %d | %s | %s | %s | %d/%d | %s | %s | %.0f | %.2f %% |\n", r.n, ms(r.converge),
			ms(r.dissemP50), ms(r.dissemP99), r.stragglers, r.samples, det, ms(r.bound), r.bytesPerSec, r.cpuPct)
	}
	if slices.Max(cfg.Sizes) > 32 {
		fmt.Println("\nAbove 32 nodes memberlist stretches push-pull (x3 at 100 nodes: every 90 s); a window " +
			"shorter than that undercounts its bytes there.")
	}
	sum := results[len(results)-1]
	for _, r := range results {
		if r.n == 30 {
			sum = r
		}
	}
	fmt.Printf("\ngossip: n=%d dissem_p99_ms=%d detect_ms=%d bytes_per_s_per_node=%.0f\n",
		sum.n, sum.dissemP99.Milliseconds(), sum.detect.Milliseconds(), sum.bytesPerSec)
	return nil
}

// pushPullInterval is memberlist's LAN push-pull interval, which the
// shipped profile keeps (below 32 nodes memberlist does not scale it).
const pushPullInterval = 30 * time.Second

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func nodeConfig(i int) gossip.Config {
	c := gossip.DefaultConfig()
	c.NodeID = fmt.Sprintf("bench-%03d", i)
	c.Region = "bench"
	c.QUICAddr = "127.0.0.1:4433"
	c.Label = "bench"
	c.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	c.BindAddr, c.BindPort, c.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
	return c
}

func measure(ctx context.Context, cfg Config, n int) (r result, err error) {
	r.n = n
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes := make([]*gossip.Node, 0, n)
	defer func() {
		for _, nd := range nodes {
			nd.Kill()
		}
	}()

	start := time.Now()
	for i := range n {
		c := nodeConfig(i)
		if i > 0 {
			c.Seeds = []string{nodes[0].Addr()}
		}
		nd, err := gossip.New(c, log)
		if err != nil {
			return r, err
		}
		nodes = append(nodes, nd)
		if i > 0 {
			if _, err := nd.Join(); err != nil {
				return r, err
			}
		}
	}
	if !poll(ctx, 60*time.Second, 10*time.Millisecond, func() bool { return allAlive(nodes, nodes) }) {
		return r, errors.New("no convergence within 60 s")
	}
	r.converge = time.Since(start)

	// Dissemination.
	var lat []time.Duration
	for trial := range cfg.Trials {
		origin := nodes[rand.IntN(n)]
		rev := uint64(trial + 1)
		seen := make(map[string]time.Duration, n)
		begin := time.Now()
		if err := origin.SetTableRevision(rev); err != nil {
			return r, err
		}
		poll(ctx, 5*time.Second, 5*time.Millisecond, func() bool {
			for _, v := range nodes {
				if _, ok := seen[v.ID()]; ok || v == origin {
					continue
				}
				for _, m := range v.Members() {
					if m.ID == origin.ID() && m.TableRevision == rev {
						seen[v.ID()] = time.Since(begin)
					}
				}
			}
			return len(seen) == n-1
		})
		r.samples += n - 1
		r.stragglers += n - 1 - len(seen)
		for _, d := range seen {
			lat = append(lat, d)
		}
		for range n - 1 - len(seen) {
			lat = append(lat, 5*time.Second)
		}
	}
	slices.Sort(lat)
	r.dissemP50, r.dissemP99 = pct(lat, 0.50), pct(lat, 0.99)

	// Steady state: nothing changes, only probes and push-pull. memberlist
	// starts each node's push-pull timer after a random stagger within
	// PushPullInterval and first exchanges one interval later, so the
	// window starts one interval after the first node started; from there
	// on every node exchanges once per interval, as in a long-lived mesh.
	settle := max(time.Until(start.Add(pushPullInterval)), 3*time.Second)
	if err := sleep(ctx, settle); err != nil {
		return r, err
	}
	b0, cpu0, t0 := bytesSent(nodes), cpuTime(), time.Now()
	if err := sleep(ctx, cfg.Window); err != nil {
		return r, err
	}
	secs := time.Since(t0).Seconds()
	r.bytesPerSec = float64(bytesSent(nodes)-b0) / float64(n) / secs
	r.cpuPct = 100 * (cpuTime() - cpu0).Seconds() / float64(n) / secs

	// Failure detection: hard-kill a node other than the seed.
	victim := nodes[1+rand.IntN(n-1)]
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(nd *gossip.Node) bool { return nd == victim })
	r.bound = gossip.DetectionBound(nodeConfig(0), n)
	begin := time.Now()
	victim.Kill()
	ok := poll(ctx, r.bound+5*time.Second, 10*time.Millisecond, func() bool {
		for _, v := range survivors {
			dead := false
			for _, m := range v.Members() {
				if m.ID == victim.ID() {
					dead = m.State == gossip.StateDead
				}
			}
			if !dead {
				return false
			}
		}
		return true
	})
	r.detect, r.detectTimedOut = time.Since(begin), !ok
	return r, ctx.Err()
}

func allAlive(views, want []*gossip.Node) bool {
	for _, v := range views {
		alive := 0
		for _, m := range v.Members() {
			if m.State == gossip.StateAlive {
				alive++
			}
		}
		if alive < len(want) {
			return false
		}
	}
	return true
}

// poll checks cond every step until it holds (true), timeout passes or ctx
// ends (false).
func poll(ctx context.Context, timeout, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(step)
	}
	return cond()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func bytesSent(nodes []*gossip.Node) uint64 {
	var s uint64
	for _, nd := range nodes {
		s += nd.Stats().BytesSent
	}
	return s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
