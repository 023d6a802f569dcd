// Command control benchmarks the control plane: write latency on a
// three-node cluster with on-disk, fsync'd Raft logs, throughput with 16
// concurrent writers, and leader failover time with Raft's default
// timings. A raw fsync'd append on the same disk is measured in the same
// run, so write latency reads as a ratio to the disk's own cost.
//
//	go run ./scripts/bench/control [-quick] [-readme README.md]
//
// The last line is machine-readable:
//
//	control: write_p50_ms=<x> write_p99_ms=<x> writes_per_s=<n> failover_p50_ms=<n>
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/cluster"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
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
	// Readme, if set, gets its bench:control section rewritten
	// (between <!-- bench:control:begin --> and <!-- bench:control:end -->).
	Readme string
}

func main() {
	cfg := Config{Writes: 1000, Writers: 16, ThroughputFor: 8 * time.Second, Kills: 5}
	quick := flag.Bool("quick", false, "a shorter run")
	flag.StringVar(&cfg.Readme, "readme", "", "rewrite the bench:control section of this markdown file")
	flag.Parse()
	if *quick {
		cfg.Writes, cfg.ThroughputFor, cfg.Kills = 300, 3*time.Second, 3
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench-control: %v\n", err)
		os.Exit(1)
	}
}

type member struct {
	dir, id, name, raftAddr, url string
	node                         *cluster.Node
	srv                          *http.Server
	peers                        []cluster.Peer
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start runs a member with Raft's default timings.
func (m *member) start() error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := cluster.DefaultConfig()
	cfg.DataDir, cfg.NodeName, cfg.NodeID = m.dir, m.name, m.id
	cfg.RaftAddr, cfg.APIAddr, cfg.Peers, cfg.Logger = m.raftAddr, m.url, m.peers, logger
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
	failovers                []time.Duration
}

func run(cfg Config) error {
	dir, err := os.MkdirTemp("", "bench-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var res results

	base, err := fsyncBaseline(dir, cfg.Writes)
	if err != nil {
		return fmt.Errorf("fsync baseline: %w", err)
	}
	res.fsyncP50, res.fsyncP99 = percentile(base, 0.5), percentile(base, 0.99)
	fmt.Printf("fsync'd append (baseline): p50 %.2f ms, p99 %.2f ms over %d appends\n", ms(res.fsyncP50), ms(res.fsyncP99), cfg.Writes)

	ms3 := make([]*member, 3)
	var peers []cluster.Peer
	for i := range ms3 {
		ra, err := freeAddr()
		if err != nil {
			return err
		}
		ha, err := freeAddr()
		if err != nil {
			return err
		}
		ms3[i] = &member{dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), id: cluster.NewUUID(), name: fmt.Sprintf("n%d", i), raftAddr: ra, url: "http://" + ha}
		peers = append(peers, cluster.Peer{ID: ms3[i].id, Addr: ra, APIAddr: ms3[i].url, Name: ms3[i].name})
	}
	for _, m := range ms3 {
		m.peers = peers
		if err := m.start(); err != nil {
			return err
		}
	}
	defer func() {
		for _, m := range ms3 {
			if m.node != nil {
				m.kill()
			}
		}
	}()
	l, err := leader(ms3, 30*time.Second)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newClient := func(addrs ...string) *client.Client {
		c, _ := client.New(client.Config{Addrs: addrs, Token: token, RetryTimeout: 20 * time.Second})
		return c
	}

	// Latency: one writer, sequential, through the leader's API.
	lc := newClient(l.url)
	lat := make([]time.Duration, 0, cfg.Writes)
	for i := range cfg.Writes {
		start := time.Now()
		if _, err := lc.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("lat-%d", i), Latitude: 1}, client.WriteOptions{}); err != nil {
			return fmt.Errorf("latency write: %w", err)
		}
		lat = append(lat, time.Since(start))
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
	if res.writesPerS, err = through([]string{l.url}, "tl"); err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	fmt.Printf("throughput, %d writers through the leader: %.0f writes/s\n", cfg.Writers, res.writesPerS)
	if res.viaFollowers, err = through([]string{ms3[0].url, ms3[1].url, ms3[2].url}, "ta"); err != nil {
		return fmt.Errorf("throughput via all nodes: %w", err)
	}
	fmt.Printf("throughput, %d writers spread over all nodes: %.0f writes/s\n", cfg.Writers, res.viaFollowers)

	// Failover: kill the leader; time until a write through a survivor
	// succeeds.
	for k := range cfg.Kills {
		l, err := leader(ms3, 30*time.Second)
		if err != nil {
			return err
		}
		var survivors []string
		for _, m := range ms3 {
			if m != l {
				survivors = append(survivors, m.url)
			}
		}
		c := newClient(survivors...)
		// Warm the connections so the timing holds only the failover.
		if _, err := c.Put(ctx, &controlv1.Region{Id: "warm"}, client.WriteOptions{}); err != nil {
			return err
		}
		killed := time.Now()
		l.kill()
		if _, err := c.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("failover-%d", k)}, client.WriteOptions{}); err != nil {
			return fmt.Errorf("write after kill %d: %w", k, err)
		}
		d := time.Since(killed)
		res.failovers = append(res.failovers, d)
		fmt.Printf("failover %d: %.0f ms\n", k+1, ms(d))
		if err := l.start(); err != nil {
			return err
		}
		// Let the restarted node catch up before the next kill.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			nl, err := leader(ms3, 30*time.Second)
			if err != nil {
				return err
			}
			if l.node.FSM().State().Index() >= nl.node.FSM().State().Index() {
				break
			}
		}
	}
	fo := percentile(res.failovers, 0.5)
	fmt.Printf("failover with default Raft timings: p50 %.0f ms over %d kills (target ≤ 3000)\n", ms(fo), len(res.failovers))

	if cfg.Readme != "" {
		// A README without the markers is not a failed benchmark.
		if err := readme.Replace(cfg.Readme, "control", report(cfg, res)); err != nil {
			fmt.Fprintf(os.Stderr, "bench-control: README not updated: %v\n", err)
		}
	}
	fmt.Printf("control: write_p50_ms=%.2f write_p99_ms=%.2f writes_per_s=%.0f failover_p50_ms=%.0f\n",
		ms(res.writeP50), ms(res.writeP99), res.writesPerS, ms(fo))
	return nil
}

func report(cfg Config, r results) string {
	fo := percentile(r.failovers, 0.5)
	var b strings.Builder
	fmt.Fprintf(&b, "| measure | result | baseline / target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| write latency p50 (1 writer, 3 nodes, fsync) | %.2f ms | %.1f× a raw fsync'd append (%.2f ms) |\n", ms(r.writeP50), ms(r.writeP50)/ms(r.fsyncP50), ms(r.fsyncP50))
	fmt.Fprintf(&b, "| write latency p99 | %.2f ms | %.1f× (%.2f ms) |\n", ms(r.writeP99), ms(r.writeP99)/ms(r.fsyncP99), ms(r.fsyncP99))
	fmt.Fprintf(&b, "| throughput, %d writers via the leader | %.0f writes/s | ≥ 1,000 |\n", cfg.Writers, r.writesPerS)
	fmt.Fprintf(&b, "| throughput, %d writers over all nodes | %.0f writes/s | followers forward |\n", cfg.Writers, r.viaFollowers)
	fmt.Fprintf(&b, "| leader failover p50 (default timings, %d kills) | %.0f ms | ≤ 3,000 |\n", len(r.failovers), ms(fo))
	return b.String()
}
