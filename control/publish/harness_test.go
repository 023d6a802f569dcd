package publish_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/seal"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/control/publish"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

const (
	natsUser = "meridian"
	natsPass = "test-nats-password-0123"
	// hb is the tightened heartbeat of these tests.
	hb = 100 * time.Millisecond
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// mesh is a control cluster with NATS and publishers, and its edges.
type mesh struct {
	t     *testing.T
	c     *controltest.Cluster
	ctl   []*ctlNode
	edges []*edge
	seq   atomic.Int64
	// lastIndex is the Raft index of the last write.
	lastIndex atomic.Uint64
}

// ctlNode is one control member's NATS server and publisher.
type ctlNode struct {
	m      *controltest.Member
	ns     *natsd.Server
	nc     *nats.Conn
	pub    *publish.Publisher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	up     bool
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return ports.Addr(t)
}

func newMesh(t *testing.T, controls int) *mesh {
	t.Helper()
	ms := &mesh{t: t, c: controltest.Start(t, controls, controltest.Options{})}
	routes := make([]string, controls)
	for i := range routes {
		routes[i] = freeAddr(t)
	}
	for i, m := range ms.c.Members {
		cfg := natsd.DefaultConfig()
		cfg.Name, cfg.Listen, cfg.ClusterListen, cfg.Routes = m.Name, "127.0.0.1:0", routes[i], routes
		cfg.User, cfg.Password, cfg.Logger = natsUser, natsPass, quiet
		ns, err := natsd.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ms.ctl = append(ms.ctl, &ctlNode{m: m, ns: ns, up: true})
	}
	wait.For(t, 20*time.Second, "NATS routes", func() bool {
		for _, c := range ms.ctl {
			if c.ns.NumRoutes() < controls-1 {
				return false
			}
		}
		return true
	})
	for _, c := range ms.ctl {
		// The publisher prefers its own server, and moves on with the
		// edges when that one dies.
		nc, err := nats.Connect(c.ns.ClientURL(), nats.UserInfo(natsUser, natsPass), nats.MaxReconnects(-1),
			nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(50*time.Millisecond, 0))
		if err != nil {
			t.Fatal(err)
		}
		cfg := publish.DefaultConfig()
		cfg.Conn, cfg.Source, cfg.IsLeader, cfg.NodeID = nc, c.m.Node.FSM(), c.m.Node.IsLeader, c.m.ID
		cfg.HeartbeatInterval, cfg.Logger = hb, quiet
		// Deltas for every change: a new term still starts with a full
		// table, so both paths run.
		cfg.FullMaxBytes = 0
		c.reg = prometheus.NewRegistry()
		cfg.Registerer = c.reg
		pub, err := publish.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.nc, c.pub, c.cancel, c.done = nc, pub, cancel, make(chan struct{})
		go func() { defer close(c.done); pub.Run(ctx) }()
	}
	t.Cleanup(func() {
		for _, e := range ms.edges {
			e.s.Close()
		}
		for _, c := range ms.ctl {
			c.kill()
		}
	})
	return ms
}

// killNATS stops a member's NATS server only.
func (c *ctlNode) killNATS() { c.ns.Shutdown() }

// kill stops a member whole: publisher, NATS and Raft.
func (c *ctlNode) kill() {
	if !c.up {
		return
	}
	c.up = false
	c.cancel()
	<-c.done
	c.nc.Close()
	c.ns.Shutdown()
	c.m.Kill()
}

func (ms *mesh) urls() []string {
	var out []string
	for _, c := range ms.ctl {
		if c.up {
			out = append(out, c.ns.ClientURL())
		}
	}
	return out
}

// leader returns the leading member's node.
func (ms *mesh) leader() *ctlNode {
	l := ms.c.Leader()
	for _, c := range ms.ctl {
		if c.m == l {
			return c
		}
	}
	ms.t.Fatal("leader not found")
	return nil
}

// write applies ops on the leader, retrying across elections with the
// same request ID, and returns the result.
func (ms *mesh) write(ops ...*controlv1.Op) *controlv1.Result {
	ms.t.Helper()
	w := &controlv1.Write{RequestId: fmt.Sprintf("req-%d-%d", time.Now().UnixNano(), ms.seq.Add(1)), Ops: ops}
	var res *controlv1.Result
	wait.For(ms.t, 30*time.Second, "the write", func() error {
		var err error
		res, err = ms.leader().m.Node.Apply(fsm.TypeWrite, w)
		if err != nil && !errors.Is(err, cluster.ErrNotLeader) && !errors.Is(err, cluster.ErrUnknownOutcome) {
			ms.t.Fatalf("write: %v", err)
		}
		return err
	})
	for {
		old := ms.lastIndex.Load()
		if res.GetIndex() <= old || ms.lastIndex.CompareAndSwap(old, res.GetIndex()) {
			return res
		}
	}
}

// edge is one edge's table client with a stand-in gateway.
type edge struct {
	s       *tablesync.Syncer
	mu      sync.Mutex
	tab     *table.Table
	applies int
}

func (e *edge) apply(t *table.Table) error {
	if err := t.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	e.tab, e.applies = t, e.applies+1
	e.mu.Unlock()
	return nil
}

func (e *edge) revision() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tab == nil {
		return 0
	}
	return e.tab.Revision
}

func edgeConfig(t *testing.T, id string, urls []string) tablesync.Config {
	cfg := tablesync.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.URLs = id, "eu", urls
	cfg.User, cfg.Password = natsUser, natsPass
	cfg.CachePath = filepath.Join(t.TempDir(), "table.pb")
	cfg.HeartbeatInterval, cfg.ReportInterval = hb, 300*time.Millisecond
	cfg.RetryMin, cfg.RetryMax, cfg.SnapshotTimeout = 50*time.Millisecond, 500*time.Millisecond, time.Second
	cfg.ReconnectWait, cfg.ReconnectJitter, cfg.PingInterval = 50*time.Millisecond, 50*time.Millisecond, time.Second
	cfg.Resolver.Getenv = func(string) string { return "sk-test" }
	cfg.Logger = quiet
	return cfg
}

func (ms *mesh) startEdge(cfg tablesync.Config) *edge {
	ms.t.Helper()
	e := &edge{}
	cfg.Apply = e.apply
	if len(cfg.TableKeys) == 0 {
		cfg.TableKeys = ms.c.TableKeys()
	}
	s, err := tablesync.New(cfg)
	if err != nil {
		ms.t.Fatal(err)
	}
	e.s = s
	if err := s.Start(context.Background()); err != nil {
		ms.t.Fatal(err)
	}
	ms.edges = append(ms.edges, e)
	return e
}

func (ms *mesh) startEdges(n int, urls func(i int) []string) []*edge {
	out := make([]*edge, n)
	keys := ms.c.TableKeys()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &edge{}
			cfg := edgeConfig(ms.t, fmt.Sprintf("edge-%03d", i), urls(i))
			cfg.Apply, cfg.TableKeys = e.apply, keys
			s, err := tablesync.New(cfg)
			if err != nil {
				ms.t.Error(err)
				return
			}
			e.s = s
			if err := s.Start(context.Background()); err != nil {
				ms.t.Error(err)
				return
			}
			mu.Lock()
			out[i] = e
			ms.edges = append(ms.edges, e)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ms.t.Failed() {
		ms.t.FailNow()
	}
	return out
}

// tableRevision waits for the leader to compile every write so far and
// returns its last valid table revision.
func (ms *mesh) tableRevision() uint64 {
	ms.t.Helper()
	var rev uint64
	wait.For(ms.t, 20*time.Second, "the leader to compile the latest state", func() bool {
		l := ms.leader()
		st := l.pub.Status()
		rev = st.TableRevision
		return st.StateRevision == l.m.Node.FSM().State().Index() && st.StateRevision >= ms.lastIndex.Load()
	})
	return rev
}

// waitEdges waits until every edge serves revision rev.
func (ms *mesh) waitEdges(edges []*edge, rev uint64, timeout time.Duration) {
	ms.t.Helper()
	wait.For(ms.t, timeout, fmt.Sprintf("%d edges at revision %d", len(edges), rev), func() bool {
		for _, e := range edges {
			if e.revision() != rev {
				return false
			}
		}
		return true
	})
}

var hashA = "sha256:" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func fleetOps() []*controlv1.Op {
	return []*controlv1.Op{
		fsm.PutOp(&controlv1.Region{Id: "eu", Name: "Europe", Latitude: 50, Longitude: 8}),
		fsm.PutOp(&controlv1.Node{Id: "n1", Region: "eu"}),
		fsm.PutOp(&controlv1.Model{Id: "gpt-4o"}),
		fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OPENAI_API_KEY"}),
		fsm.PutOp(&controlv1.Provider{Id: "local", Kind: "local"}),
		fsm.PutOp(&controlv1.Route{Model: "gpt-4o", Targets: []*controlv1.Target{{Provider: "oai"}}}),
		fsm.PutOp(&controlv1.Key{Id: "k1", Hash: hashA}),
	}
}

// modelOps adds a routed model.
func modelOps(id string) []*controlv1.Op {
	return []*controlv1.Op{
		fsm.PutOp(&controlv1.Model{Id: id}),
		fsm.PutOp(&controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "oai"}}}),
	}
}

func findModel(ms []table.Model, id string) (table.Model, bool) {
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return table.Model{}, false
}

func encodeUpdate(t *testing.T, u *tablev1.TableUpdate) []byte {
	b, err := tablewire.Encode(u)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricValue sums the samples of a counter or gauge family.
func metricValue(t *testing.T, c *ctlNode, name string) float64 {
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		v := 0.0
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// updates returns how many updates of a kind ("full", "delta") c
// published.
func updates(t *testing.T, c *ctlNode, kind string) float64 {
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meridian_control_table_updates_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// signingKey is the cluster's table key, opened as a control node opens
// it (the test cluster runs without a KEK).
func (ms *mesh) signingKey() ed25519.PrivateKey {
	ms.c.TableKeys()
	id := ms.leader().m.Node.FSM().State().Identity()
	seed, err := (*seal.KEK)(nil).Open(id.GetSealedPrivateKey(), seal.AADTableSigningKey)
	if err != nil {
		ms.t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}
