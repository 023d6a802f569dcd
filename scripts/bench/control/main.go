// Command control benchmarks the control plane: write latency on a
// three-node cluster with on-disk, fsync'd Raft logs, throughput with 16
// concurrent writers, unplanned leader failover (the leader killed) and
// planned leadership transfer with the node's tuned Raft timings, the
// same failover with 40 ms of one-way delay between the nodes (the WAN
// relay, shared/testkit/relay), and the elections nobody caused: the
// Raft term must not move during an idle window or under write load. A
// raw fsync'd append on the same disk is measured in the same run, so
// write latency reads as a ratio to the disk's own cost.
//
//	go run ./scripts/bench/control [-quick] [-idle 10m] [-readme README.md]
//
// The last line is machine-readable:
//
//	control: write_p50_ms=<x> write_p99_ms=<x> writes_per_s=<n> failover_p50_ms=<n> transfer_p50_ms=<x> wan_failover_p50_ms=<n> spurious_elections=<n>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/cluster"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
)

const token = "bench-admin-token-0123456789"

// Config bounds the run.
type Config struct {
	// Writes is how many sequential writes measure latency.
	Writes int
	// Writers is the concurrency of the throughput run.
	Writers int
	// ThroughputFor is how long the throughput run lasts.
	ThroughputFor time.Duration
	// Kills is how many leader kills measure failover.
	Kills int
	// Transfers is how many planned hand-overs measure transfer time.
	Transfers int
	// Idle is how long the cluster sits idle while elections are counted.
	Idle time.Duration
	// WANDelay is the one-way delay between nodes in the WAN run; zero
	// skips it.
	WANDelay time.Duration
	// WANKills is how many leader kills measure failover over the WAN.
	WANKills int
	// Readme, if set, gets its bench:control section rewritten
	// (between <!-- bench:control:begin --> and <!-- bench:control:end -->).
	Readme string
}

func main() {
	cfg := Config{Writes: 1000, Writers: 16, ThroughputFor: 8 * time.Second, Kills: 9, Transfers: 9, Idle: 30 * time.Second,
		WANDelay: 40 * time.Millisecond, WANKills: 7}
	quick := flag.Bool("quick", false, "a shorter run")
	idle := flag.Duration("idle", 0, "idle window in which elections are counted (default 30s, 5s with -quick)")
	flag.DurationVar(&cfg.WANDelay, "wan-delay", cfg.WANDelay, "one-way delay between nodes for the WAN failover run; 0 skips it")
	logRaft := flag.Bool("raft-log", false, "send the members' Raft logs to stderr")
	wanKills := flag.Int("wan-kills", 0, "leader kills over the WAN (default 7, 3 with -quick)")
	flag.StringVar(&cfg.Readme, "readme", "", "rewrite the bench:control section of this markdown file")
	flag.Parse()
	if *quick {
		cfg.Writes, cfg.ThroughputFor, cfg.Kills, cfg.Transfers, cfg.Idle, cfg.WANKills = 300, 3*time.Second, 3, 3, 5*time.Second, 3
	}
	if *idle > 0 {
		cfg.Idle = *idle
	}
	if *logRaft {
		raftLog = os.Stderr
	}
	if *wanKills > 0 {
		cfg.WANKills = *wanKills
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench-control: %v\n", err)
		os.Exit(1)
	}
}

type member struct {
	dir, id, name, raftAddr, url string
	// raftAdvertise and apiAdvertise, when set, are the relay addresses
	// the other nodes reach this one through.
	raftAdvertise, apiAdvertise string
	node                        *cluster.Node
	srv                         *http.Server
	peers                       []cluster.Peer
}

// freeAddr picks a port below the ephemeral range, where no client's
// outgoing connection can take it before the node binds it.
func freeAddr() (string, error) {
	p, err := ports.Pick()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// raftLog, when set, receives every member's logs (-raft-log).
var raftLog io.Writer = io.Discard

// start runs a member with the node's default (tuned) timings.
func (m *member) start() error {
	logger := slog.New(slog.NewTextHandler(raftLog, nil))
	cfg := cluster.DefaultConfig()
	cfg.DataDir, cfg.NodeName, cfg.NodeID = m.dir, m.name, m.id
	cfg.RaftAddr, cfg.APIAddr, cfg.Peers, cfg.Logger = m.raftAddr, m.url, m.peers, logger
	if m.raftAdvertise != "" {
		cfg.RaftAdvertise, cfg.APIAddr = m.raftAdvertise, m.apiAdvertise
	}
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m.node, err = cluster.Open(cfg); err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	if err != nil {
		return err
	}
	acfg := api.DefaultConfig()
	acfg.AdminTokens, acfg.Logger = []string{token}, logger
	h, err := api.New(acfg, m.node)
	if err != nil {
		return err
	}
	var l net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if l, err = net.Listen("tcp", strings.TrimPrefix(m.url, "http://")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return err
	}
	m.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go m.srv.Serve(l)
	return nil
}

func (m *member) kill() {
	m.srv.Close()
	m.node.Close()
	m.node = nil
}

func leader(ms []*member, timeout time.Duration) (*member, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.node != nil && m.node.IsLeader() && m.node.ConsistentRead() == nil {
				return m, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, errors.New("no leader")
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fsyncBaseline appends records like a log entry and fsyncs each.
func fsyncBaseline(dir string, n int) ([]time.Duration, error) {
	f, err := os.OpenFile(filepath.Join(dir, "fsync-baseline"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rec := make([]byte, 256)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := f.Write(rec); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

type results struct {
	fsyncP50, fsyncP99       time.Duration
	writeP50, writeP99       time.Duration
	writesPerS, viaFollowers float64
	failovers, transfers     []time.Duration
	wanFailovers             []time.Duration
	wanDelay                 time.Duration
	idle                     time.Duration
	spurious                 uint64
}

// startCluster starts three members in dir. With a delay, every node's
// Raft and API traffic from the others goes through a relay adding that
// one-way delay in each direction.
func startCluster(dir string, delay time.Duration) ([]*member, func(), error) {
	ms3 := make([]*member, 3)
	var relays []*relay.Relay
	stop := func() {
		for _, m := range ms3 {
			if m != nil && m.node != nil {
				m.kill()
			}
		}
		for _, r := range relays {
			r.Close()
		}
	}
	var peers []cluster.Peer
	for i := range ms3 {
		ra, err := freeAddr()
		if err != nil {
			return nil, stop, err
		}
		ha, err := freeAddr()
		if err != nil {
			return nil, stop, err
		}
		m := &member{dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), id: cluster.NewUUID(), name: fmt.Sprintf("n%d", i), raftAddr: ra, url: "http://" + ha}
		ms3[i] = m
		peerRaft, peerAPI := ra, m.url
		if delay > 0 {
			rr, err := relay.Start(relay.Config{Target: ra, TCPListen: "127.0.0.1:0", Delay: delay})
			if err != nil {
				return nil, stop, err
			}
			relays = append(relays, rr)
			ar, err := relay.Start(relay.Config{Target: ha, TCPListen: "127.0.0.1:0", Delay: delay})
			if err != nil {
				return nil, stop, err
			}
			relays = append(relays, ar)
			m.raftAdvertise, m.apiAdvertise = rr.TCPAddr(), "http://"+ar.TCPAddr()
			peerRaft, peerAPI = m.raftAdvertise, m.apiAdvertise
		}
		peers = append(peers, cluster.Peer{ID: m.id, Addr: peerRaft, APIAddr: peerAPI, Name: m.name})
	}
	for _, m := range ms3 {
		m.peers = peers
		if err := m.start(); err != nil {
			return nil, stop, err
		}
	}
	return ms3, stop, nil
}

// maxTerm is the highest Raft term among the running members: it rises
// with every election, and only with one.
func maxTerm(ms []*member) uint64 {
	var t uint64
	for _, m := range ms {
		if m.node != nil {
			t = max(t, m.node.Stats().Term)
		}
	}
	return t
}

// settled waits until every running member is in the same term and
// knows the same leader, so a freshly started cluster's last candidacies
// are over before elections are counted.
func settled(ms []*member) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var terms []uint64
		var leaders []string
		for _, m := range ms {
			if m.node != nil {
				id, _, _ := m.node.Leader()
				terms, leaders = append(terms, m.node.Stats().Term), append(leaders, id)
			}
		}
		if len(slices.Compact(terms)) == 1 && len(slices.Compact(leaders)) == 1 && leaders[0] != "" {
			return nil
		}
	}
	return errors.New("the members never agreed on a term and a leader")
}

// quiet runs fn, a phase in which nothing should cause an election, and
// returns how many elections happened anyway.
func quiet(ms []*member, fn func() error) (uint64, error) {
	before := maxTerm(ms)
	err := fn()
	return maxTerm(ms) - before, err
}

// idle watches the terms for d.
func idle(d time.Duration) func() error {
	return func() error {
		for end := time.Now().Add(d); time.Now().Before(end); {
			time.Sleep(min(100*time.Millisecond, time.Until(end)))
		}
		return nil
	}
}

// caughtUp waits until m's state has the leader's index.
func caughtUp(ms []*member, m *member) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		nl, err := leader(ms, 30*time.Second)
		if err != nil {
			return err
		}
		if m.node.FSM().State().Index() >= nl.node.FSM().State().Index() {
			return nil
		}
	}
	return fmt.Errorf("%s did not catch up", m.name)
}

func survivorsOf(ms []*member, l *member) []string {
	var out []string
	for _, m := range ms {
		if m != l {
			out = append(out, m.url)
		}
	}
	return out
}

// failovers kills the leader n times; each sample is the time from the
// kill until a write through a survivor is acknowledged.
func failovers(ctx context.Context, ms []*member, n int, tag string, newClient func(...string) *client.Client) ([]time.Duration, error) {
	var out []time.Duration
	for k := range n {
		l, err := leader(ms, 30*time.Second)
		if err != nil {
			return nil, err
		}
		c := newClient(survivorsOf(ms, l)...)
		// Warm the connections so the timing holds only the failover.
		if _, err := c.Put(ctx, &controlv1.Region{Id: "warm"}, client.WriteOptions{}); err != nil {
			return nil, err
		}
		killed := time.Now()
		l.kill()
		// When a survivor first leads: the election's share of the time.
		elected := make(chan time.Duration, 1)
		go func() {
			for time.Since(killed) < 30*time.Second {
				for _, m := range ms {
					if m != l && m.node != nil && m.node.IsLeader() {
						elected <- time.Since(killed)
						return
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
			elected <- 0
		}()
		if _, err := c.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("%s-failover-%d", tag, k)}, client.WriteOptions{}); err != nil {
			return nil, fmt.Errorf("write after kill %d: %w", k, err)
		}
		d := time.Since(killed)
		out = append(out, d)
		fmt.Printf("%s failover %d: %.0f ms (a survivor led after %.0f ms)\n", tag, k+1, float64(d)/float64(time.Millisecond), float64(<-elected)/float64(time.Millisecond))
		if err := l.start(); err != nil {
			return nil, err
		}
		// Let the restarted node catch up before the next kill.
		if err := caughtUp(ms, l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// transfers hands leadership over n times, as SIGTERM of a leader or
// `meridianctl cluster transfer` does; each sample is the time from the
// start of the hand-over until a write started after it, through a node
// that did not lead, is acknowledged: how long writes stall.
func transfers(ctx context.Context, ms []*member, n int, newClient func(...string) *client.Client) ([]time.Duration, error) {
	var out []time.Duration
	for k := range n {
		l, err := leader(ms, 30*time.Second)
		if err != nil {
			return nil, err
		}
		c := newClient(survivorsOf(ms, l)...)
		if _, err := c.Put(ctx, &controlv1.Region{Id: "warm"}, client.WriteOptions{}); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := l.node.TransferLeadership(); err != nil {
			return nil, fmt.Errorf("transfer %d: %w", k, err)
		}
		handedOver := time.Since(start)
		if _, err := c.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("transfer-%d", k)}, client.WriteOptions{}); err != nil {
			return nil, fmt.Errorf("write after transfer %d: %w", k, err)
		}
		d := time.Since(start)
		out = append(out, d)
		fmt.Printf("transfer %d: %.1f ms (hand-over %.1f ms, then the write)\n", k+1, float64(d)/float64(time.Millisecond), float64(handedOver)/float64(time.Millisecond))
		if _, err := leader(ms, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func run(cfg Config) error {
	dir, err := os.MkdirTemp("", "bench-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	res := results{wanDelay: cfg.WANDelay, idle: cfg.Idle}

	base, err := fsyncBaseline(dir, cfg.Writes)
	if err != nil {
		return fmt.Errorf("fsync baseline: %w", err)
	}
	res.fsyncP50, res.fsyncP99 = percentile(base, 0.5), percentile(base, 0.99)
	fmt.Printf("fsync'd append (baseline): p50 %.2f ms, p99 %.2f ms over %d appends\n", ms(res.fsyncP50), ms(res.fsyncP99), cfg.Writes)

	ms3, stop, err := startCluster(filepath.Join(dir, "lan"), 0)
	defer stop()
	if err != nil {
		return err
	}
	l, err := leader(ms3, 30*time.Second)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+2*cfg.Idle)
	defer cancel()
	newClient := func(addrs ...string) *client.Client {
		c, _ := client.New(client.Config{Addrs: addrs, Token: token, RetryTimeout: 20 * time.Second})
		return c
	}
	spurious := func(n uint64, err error) error {
		res.spurious += n
		if n > 0 {
			fmt.Printf("spurious elections: %d (%s)\n", n, time.Now().Format(time.TimeOnly))
		}
		return err
	}

	if err := settled(ms3); err != nil {
		return err
	}
	if err := spurious(quiet(ms3, idle(cfg.Idle))); err != nil {
		return err
	}
	fmt.Printf("idle %s on loopback: %d elections\n", cfg.Idle, res.spurious)

	// Latency: one writer, sequential, through the leader's API.
	lc := newClient(l.url)
	lat := make([]time.Duration, 0, cfg.Writes)
	err = spurious(quiet(ms3, func() error {
		for i := range cfg.Writes {
			start := time.Now()
			if _, err := lc.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("lat-%d", i), Latitude: 1}, client.WriteOptions{}); err != nil {
				return fmt.Errorf("latency write: %w", err)
			}
			lat = append(lat, time.Since(start))
		}
		return nil
	}))
	if err != nil {
		return err
	}
	res.writeP50, res.writeP99 = percentile(lat, 0.5), percentile(lat, 0.99)
	fmt.Printf("write latency, 1 writer, 3 nodes: p50 %.2f ms, p99 %.2f ms (%.1fx / %.1fx the fsync baseline)\n",
		ms(res.writeP50), ms(res.writeP99), ms(res.writeP50)/ms(res.fsyncP50), ms(res.writeP99)/ms(res.fsyncP99))

	// Throughput: concurrent writers, first through the leader, then
	// spread over every node (followers forward).
	through := func(addrs []string, tag string) (float64, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(cfg.ThroughputFor)
		var wg sync.WaitGroup
		start := time.Now()
		for w := range cfg.Writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newClient(addrs[w%len(addrs)])
				for i := 0; time.Now().Before(deadline) && i < 1_000_000; i++ {
					if _, err := c.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("%s-%d-%d", tag, w, i)}, client.WriteOptions{}); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, err
		}
		return float64(n.Load()) / time.Since(start).Seconds(), nil
	}
	err = spurious(quiet(ms3, func() (err error) {
		if res.writesPerS, err = through([]string{l.url}, "tl"); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
		fmt.Printf("throughput, %d writers through the leader: %.0f writes/s\n", cfg.Writers, res.writesPerS)
		if res.viaFollowers, err = through([]string{ms3[0].url, ms3[1].url, ms3[2].url}, "ta"); err != nil {
			return fmt.Errorf("throughput via all nodes: %w", err)
		}
		fmt.Printf("throughput, %d writers spread over all nodes: %.0f writes/s\n", cfg.Writers, res.viaFollowers)
		return nil
	}))
	if err != nil {
		return err
	}

	if res.failovers, err = failovers(ctx, ms3, cfg.Kills, "loopback", newClient); err != nil {
		return err
	}
	fo := percentile(res.failovers, 0.5)
	fmt.Printf("unplanned failover on loopback: p50 %.0f ms over %d kills (target ≤ 500)\n", ms(fo), len(res.failovers))
	if res.transfers, err = transfers(ctx, ms3, cfg.Transfers, newClient); err != nil {
		return err
	}
	tr := percentile(res.transfers, 0.5)
	fmt.Printf("planned transfer on loopback: p50 %.1f ms over %d hand-overs (target ≤ 20)\n", ms(tr), len(res.transfers))
	stop()

	var wfo time.Duration
	if cfg.WANDelay > 0 {
		wan, stopWAN, err := startCluster(filepath.Join(dir, "wan"), cfg.WANDelay)
		defer stopWAN()
		if err != nil {
			return err
		}
		if _, err := leader(wan, 30*time.Second); err != nil {
			return err
		}
		if err := settled(wan); err != nil {
			return err
		}
		before := res.spurious
		if err := spurious(quiet(wan, idle(cfg.Idle/2))); err != nil {
			return err
		}
		fmt.Printf("idle %s with %s one-way delay: %d elections\n", cfg.Idle/2, cfg.WANDelay, res.spurious-before)
		if res.wanFailovers, err = failovers(ctx, wan, cfg.WANKills, "wan", newClient); err != nil {
			return err
		}
		wfo = percentile(res.wanFailovers, 0.5)
		fmt.Printf("unplanned failover with %s one-way delay: p50 %.0f ms over %d kills (target < 1000)\n", cfg.WANDelay, ms(wfo), len(res.wanFailovers))
		stopWAN()
	}
	fmt.Printf("spurious elections (idle and under write load): %d\n", res.spurious)

	if cfg.Readme != "" {
		// A README without the markers is not a failed benchmark.
		if err := readme.Replace(cfg.Readme, "control", report(cfg, res)); err != nil {
			fmt.Fprintf(os.Stderr, "bench-control: README not updated: %v\n", err)
		}
	}
	fmt.Printf("control: write_p50_ms=%.2f write_p99_ms=%.2f writes_per_s=%.0f failover_p50_ms=%.0f transfer_p50_ms=%.1f wan_failover_p50_ms=%.0f spurious_elections=%d\n",
		ms(res.writeP50), ms(res.writeP99), res.writesPerS, ms(fo), ms(tr), ms(wfo), res.spurious)
	return nil
}

func report(cfg Config, r results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| measure | result | baseline / target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| write latency p50 (1 writer, 3 nodes, fsync) | %.2f ms | %.1f× a raw fsync'd append (%.2f ms) |\n", ms(r.writeP50), ms(r.writeP50)/ms(r.fsyncP50), ms(r.fsyncP50))
	fmt.Fprintf(&b, "| write latency p99 | %.2f ms | %.1f× (%.2f ms) |\n", ms(r.writeP99), ms(r.writeP99)/ms(r.fsyncP99), ms(r.fsyncP99))
	fmt.Fprintf(&b, "| throughput, %d writers via the leader | %.0f writes/s | ≥ 1,000 |\n", cfg.Writers, r.writesPerS)
	fmt.Fprintf(&b, "| throughput, %d writers over all nodes | %.0f writes/s | followers forward |\n", cfg.Writers, r.viaFollowers)
	fmt.Fprintf(&b, "| unplanned leader failover p50, loopback (%d kills; p90 %.0f ms) | %.0f ms | ≤ 500 |\n", len(r.failovers), ms(percentile(r.failovers, 0.9)), ms(percentile(r.failovers, 0.5)))
	fmt.Fprintf(&b, "| planned leadership transfer p50 (%d hand-overs; writes stall this long) | %.1f ms | ≤ 20 |\n", len(r.transfers), ms(percentile(r.transfers, 0.5)))
	if len(r.wanFailovers) > 0 {
		fmt.Fprintf(&b, "| unplanned leader failover p50, %s one-way delay (%d kills) | %.0f ms | < 1,000 |\n", r.wanDelay, len(r.wanFailovers), ms(percentile(r.wanFailovers, 0.5)))
	}
	fmt.Fprintf(&b, "| spurious elections (idle %s, %s with delay, and under write load) | %d | 0 |\n", r.idle, r.idle/2, r.spurious)
	fmt.Fprintf(&b, "\nMeasured by `make bench-control` on %s, %d CPUs.\n", time.Now().Format("2006-01-02"), runtime.NumCPU())
	return b.String()
}
