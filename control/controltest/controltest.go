// Package controltest starts in-process control clusters for tests: real
// Raft on real on-disk logs, TCP on 127.0.0.1, the management API on
// loopback HTTP, and tightened timers. It is imported by tests only and
// must never be linked into a binary.
package controltest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/console"
	"github.com/meridian-mesh/meridian/control/distribution"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/control/usage"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// Tokens every test cluster accepts.
const (
	AdminToken = "test-admin-token-0123456789"
	ReadToken  = "test-read-token-0123456789ab"
)

// Options adjust a test cluster.
type Options struct {
	// Timers multiplies the tightened Raft timers; 0 means 1.
	Timers float64
	// HeartbeatInterval is the leader's table heartbeat; 0 means the
	// tests' 100 ms (the shipped default is 1 s).
	HeartbeatInterval time.Duration
	// SnapshotThreshold and TrailingLogs, when set, make Raft snapshot
	// and compact often.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// Verbose sends raft's logs to the test log.
	Verbose bool
	// Distribution runs each member's routing table distribution: an
	// embedded NATS server on 127.0.0.1 (each member its own, not
	// clustered unless ClusterNATS), token NATSToken, with the status served beside the
	// API as meridian-control serves it.
	Distribution bool
	// ClusterNATS clusters the members' NATS servers with each other,
	// as meridian-control does, so a client of any member's server gets
	// the tables whichever member leads. Needs Distribution.
	ClusterNATS bool
	// Usage runs JetStream in each member's NATS server and the usage
	// aggregation on the leader (control/usage), flushing batches every
	// 100 ms. Needs Distribution; with several members it needs
	// ClusterNATS too, so that records reach the leader's stream.
	Usage bool
	// KEK, when set, seals the cluster's keys, runs the cluster CA and
	// join endpoints, and admits edges to NATS by the nkeys they
	// registered at join.
	KEK *seal.KEK
	// NodeCertTTL is the life of node certificates issued at join and
	// renewal; 0 keeps the API's default (12h).
	NodeCertTTL time.Duration
	// Console serves the web console at /ui beside the API, as
	// meridian-control does, its decision explorer asking ConsoleEdges.
	Console      bool
	ConsoleEdges []console.Edge
}

// NATSToken authenticates to the members' NATS servers.
const NATSToken = "test-nats-token-0123456789abcd"

// Cluster is a set of control nodes in this process.
type Cluster struct {
	t       testing.TB
	opts    Options
	Members []*Member
}

// Member is one control node with its API.
type Member struct {
	c        *Cluster
	Dir      string
	ID       string
	Name     string
	RaftAddr string
	URL      string
	Node     *cluster.Node
	// natsRoute is the member's NATS route address, with ClusterNATS.
	natsRoute string

	mu      sync.Mutex
	applied map[string]int
	srv     *http.Server
	dist    *distribution.Distribution
	up      bool
}

// NATSURL is the member's NATS server, with Options.Distribution; edges
// connect there with NATSToken.
func (m *Member) NATSURL() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dist == nil {
		return ""
	}
	return m.dist.ClientURL()
}

// Start starts n voters bootstrapped with the same peer list and waits
// for a leader.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts}
	var peers []cluster.Peer
	for i := range n {
		m := &Member{c: c, Dir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i)), ID: cluster.NewUUID(),
			Name: fmt.Sprintf("n%d", i), RaftAddr: freeAddr(t), URL: "http://" + freeAddr(t), applied: map[string]int{}}
		if opts.ClusterNATS {
			m.natsRoute = freeAddr(t)
		}
		c.Members = append(c.Members, m)
		peers = append(peers, cluster.Peer{ID: m.ID, Addr: m.RaftAddr, APIAddr: m.URL, Name: m.Name})
	}
	for _, m := range c.Members {
		if n == 1 {
			m.start(nil, true) // the single-node bootstrap path
		} else {
			m.start(peers, false)
		}
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
	})
	c.Leader()
	return c
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	return ports.Addr(t)
}

// AddMember starts a node with no bootstrap, ready to be joined.
func (c *Cluster) AddMember() *Member {
	m := &Member{c: c, Dir: filepath.Join(c.t.TempDir(), fmt.Sprintf("n%d", len(c.Members))), ID: cluster.NewUUID(),
		Name: fmt.Sprintf("n%d", len(c.Members)), RaftAddr: freeAddr(c.t), URL: "http://" + freeAddr(c.t), applied: map[string]int{}}
	if c.opts.ClusterNATS {
		m.natsRoute = freeAddr(c.t)
	}
	c.Members = append(c.Members, m)
	m.start(nil, false)
	return m
}

func (m *Member) start(peers []cluster.Peer, bootstrap bool) {
	t := m.c.t
	t.Helper()
	scale := m.c.opts.Timers
	if scale == 0 {
		scale = 1
	}
	ms := func(v float64) time.Duration { return time.Duration(v * scale * float64(time.Millisecond)) }
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if m.c.opts.Verbose {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	cfg := cluster.DefaultConfig()
	cfg.DataDir, cfg.NodeName, cfg.NodeID = m.Dir, m.Name, m.ID
	cfg.RaftAddr, cfg.APIAddr = m.RaftAddr, m.URL
	cfg.Peers, cfg.Bootstrap = peers, bootstrap
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout, cfg.CommitTimeout = ms(200), ms(200), ms(100), ms(5)
	cfg.SnapshotThreshold, cfg.TrailingLogs = m.c.opts.SnapshotThreshold, m.c.opts.TrailingLogs
	cfg.Logger, cfg.KEK = logger, m.c.opts.KEK
	// A restarted node replays its log into a fresh state, so its counts
	// start over.
	m.mu.Lock()
	m.applied = map[string]int{}
	m.mu.Unlock()
	cfg.OnApply = func(_ uint64, id string) {
		m.mu.Lock()
		m.applied[id]++
		m.mu.Unlock()
	}
	var node *cluster.Node
	var err error
	// A restarted node rebinds its old port, which the kernel may hold
	// for a moment.
	for deadline := time.Now().Add(10 * time.Second); ; {
		node, err = cluster.Open(cfg)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start %s: %v", m.Name, err)
	}
	acfg := api.DefaultConfig()
	acfg.AdminTokens, acfg.ReadTokens = []string{AdminToken}, []string{ReadToken}
	acfg.Logger, acfg.KEK, acfg.NodeCertTTL = logger, m.c.opts.KEK, m.c.opts.NodeCertTTL
	// With distribution, one registry for the node, as meridian-control
	// has: the API, Raft, distribution and usage metrics at /metrics.
	var reg *prometheus.Registry
	if m.c.opts.Distribution {
		reg = prometheus.NewRegistry()
		acfg.Registerer = reg
	}
	srv, err := api.New(acfg, node)
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler = srv
	var dist *distribution.Distribution
	if m.c.opts.Distribution {
		dcfg := distribution.DefaultConfig()
		dcfg.Listen, dcfg.Token, dcfg.Logger = "127.0.0.1:0", NATSToken, logger
		dcfg.HeartbeatInterval = 100 * time.Millisecond
		if m.c.opts.HeartbeatInterval > 0 {
			dcfg.HeartbeatInterval = m.c.opts.HeartbeatInterval
		}
		dcfg.EdgeIdentities, dcfg.KEK = m.c.opts.KEK != nil, m.c.opts.KEK
		dcfg.Registerer = reg
		dcfg.ReadTokens = []string{AdminToken, ReadToken}
		if m.c.opts.Usage {
			dcfg.JetStreamDir, dcfg.UsageFlushInterval = filepath.Join(m.Dir, "jetstream"), 100*time.Millisecond
		}
		if m.natsRoute != "" {
			dcfg.ClusterListen = m.natsRoute
			for _, o := range m.c.Members {
				dcfg.Routes = append(dcfg.Routes, o.natsRoute)
			}
		}
		if dist, err = distribution.Start(dcfg, node); err != nil {
			node.Close()
			t.Fatalf("distribution of %s: %v", m.Name, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET "+distribution.StatusPath, dist.Handler())
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/", srv)
		handler = mux
	}
	if m.c.opts.Console {
		ui, err := console.New(console.Config{API: handler, Authorize: srv.Authorize, Edges: m.c.opts.ConsoleEdges, Logger: logger})
		if err != nil {
			if dist != nil {
				dist.Close()
			}
			node.Close()
			t.Fatalf("console of %s: %v", m.Name, err)
		}
		mux := http.NewServeMux()
		mux.Handle(console.Prefix, ui)
		mux.Handle("/", handler)
		handler = mux
	}
	var l net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; {
		l, err = net.Listen("tcp", strings.TrimPrefix(m.URL, "http://"))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		if dist != nil {
			dist.Close()
		}
		node.Close()
		t.Fatalf("listen %s: %v", m.URL, err)
	}
	m.mu.Lock()
	m.Node, m.srv, m.dist, m.up = node, &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}, dist, true
	hs := m.srv
	m.mu.Unlock()
	go hs.Serve(l)
}

// Usage returns the member's usage aggregator, with Options.Usage while
// it runs; nil otherwise.
func (m *Member) Usage() *usage.Aggregator {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dist == nil {
		return nil
	}
	return m.dist.Usage()
}

// Kill stops a member abruptly: no leadership hand-over.
func (m *Member) Kill() {
	m.mu.Lock()
	if !m.up {
		m.mu.Unlock()
		return
	}
	m.up = false
	srv, node, dist := m.srv, m.Node, m.dist
	m.dist = nil
	m.mu.Unlock()
	srv.Close()
	if dist != nil {
		dist.Close()
	}
	node.Close()
}

// Restart starts a killed member again from its data folder.
func (m *Member) Restart() {
	m.start(nil, false)
}

// Up reports whether the member runs.
func (m *Member) Up() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up
}

// Applied returns how many times each request ID changed this member's
// state since it started.
func (m *Member) Applied() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.applied))
	for k, v := range m.applied {
		out[k] = v
	}
	return out
}

// Leader waits for a running member to lead and be ready for consistent
// reads.
func (c *Cluster) Leader() *Member {
	c.t.Helper()
	var leader *Member
	wait.For(c.t, 30*time.Second, "a leader", func() bool {
		for _, m := range c.Members {
			if m.Up() && m.Node.IsLeader() && m.Node.ConsistentRead() == nil {
				leader = m
				return true
			}
		}
		return false
	})
	return leader
}

// Followers returns the running members that do not lead.
func (c *Cluster) Followers() []*Member {
	var out []*Member
	for _, m := range c.Members {
		if m.Up() && !m.Node.IsLeader() {
			out = append(out, m)
		}
	}
	return out
}

// WaitConverged waits until every running member's state equals the
// leader's.
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	wait.For(c.t, 30*time.Second, "replicas to converge", func() bool {
		l := c.Leader()
		want := l.Node.FSM().State()
		for _, m := range c.Members {
			if m.Up() && !m.Node.FSM().State().Equal(want) {
				return false
			}
		}
		return true
	})
}

// Do sends an authenticated request to a member and returns the status
// and body.
func (m *Member) Do(ctx context.Context, method, path, token string, body io.Reader, hdr ...string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, m.URL+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, b, resp.Header, err
	}
	return resp.StatusCode, b, resp.Header, nil
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TableKeys waits for the cluster's table-signing key (the first leader
// creates it) and returns it, for an edge's tablesync.Config.TableKeys.
func (c *Cluster) TableKeys() []ed25519.PublicKey {
	c.t.Helper()
	var pub ed25519.PublicKey
	wait.For(c.t, 20*time.Second, "the cluster's table-signing key", func() bool {
		for _, m := range c.Members {
			if m.Up() {
				if id := m.Node.FSM().State().Identity(); id != nil {
					pub = ed25519.PublicKey(id.GetPublicKey())
					return true
				}
			}
		}
		return false
	})
	return []ed25519.PublicKey{pub}
}

// TableKey is TableKeys' key in config form ("ed25519:<base64>").
func (c *Cluster) TableKey() string { return tablewire.FormatPublicKey(c.TableKeys()[0]) }

// NodeTableKeys waits for node's state to hold the cluster's
// table-signing key and returns it.
func NodeTableKeys(t testing.TB, node *cluster.Node) []ed25519.PublicKey {
	t.Helper()
	var pub ed25519.PublicKey
	wait.For(t, 20*time.Second, "the cluster's table-signing key", func() bool {
		if id := node.FSM().State().Identity(); id != nil {
			pub = ed25519.PublicKey(id.GetPublicKey())
			return true
		}
		return false
	})
	return []ed25519.PublicKey{pub}
}
