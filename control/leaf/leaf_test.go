package leaf

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/natsd"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/promtest"
	"github.com/meridian-mesh/meridian/shared/testkit/tablegen"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

const token = "leaf-test-token"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// control stands in for the control plane: it signs tables, answers
// snapshot requests in the control nodes' queue group, and publishes
// heartbeats.
type control struct {
	t    *testing.T
	key  ed25519.PrivateKey
	nc   *nats.Conn
	mu   sync.Mutex
	snap []byte
	rev  uint64
	sub  *nats.Subscription
	asks atomic.Int64
}

func newControl(t *testing.T, url string, key ed25519.PrivateKey) *control {
	nc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := &control{t: t, key: key, nc: nc}
	c.answer(true)
	return c
}

// answer makes the control plane answer snapshot requests (true) or
// vanish from the bus (false), as a cut makes it.
func (c *control) answer(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on && c.sub == nil {
		sub, err := c.nc.QueueSubscribe(tablewire.SubjectSnapshot, tablewire.SnapshotQueue, func(m *nats.Msg) {
			c.asks.Add(1)
			c.mu.Lock()
			b := c.snap
			c.mu.Unlock()
			m.Respond(b)
		})
		if err != nil {
			c.t.Fatal(err)
		}
		c.sub = sub
	} else if !on && c.sub != nil {
		c.sub.Unsubscribe()
		c.sub = nil
	}
	c.nc.Flush()
}

// table signs t as the current snapshot and announces it in a heartbeat.
func (c *control) table(t *tablev1.RoutingTable) []byte {
	b, err := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: t})
	if err != nil {
		c.t.Fatal(err)
	}
	signed := tablewire.Sign(c.key, tablewire.ContextSnapshot, tablewire.SignatureField, b)
	c.mu.Lock()
	c.snap, c.rev = signed, t.GetRevision()
	c.mu.Unlock()
	c.heartbeat()
	return signed
}

func (c *control) heartbeat() {
	c.mu.Lock()
	rev := c.rev
	c.mu.Unlock()
	hb, _ := tablewire.Encode(&tablev1.Heartbeat{Schema: tablewire.Schema, Revision: rev, ClusterId: "gen", Epoch: 1, IntervalMs: 1000})
	c.nc.Publish(tablewire.SubjectHeartbeat, tablewire.Sign(c.key, tablewire.ContextHeartbeat, tablewire.HeartbeatSignatureField, hb))
	c.nc.Flush()
}

func table(rev uint64, nodes map[string]string, revoked ...string) *tablev1.RoutingTable {
	t := tablegen.Table(mrand.New(mrand.NewPCG(1, 2)), 2)
	t.Revision = rev
	for i, n := range t.Entities.Nodes {
		n.NatsKey = nodes[n.GetId()]
		for _, r := range revoked {
			if r == n.GetId() {
				t.Entities.Nodes[i].Revoked, t.Entities.Nodes[i].NatsKey = true, ""
			}
		}
	}
	return t
}

func server(t *testing.T, ids natsd.Identities) *natsd.Server {
	cfg := natsd.DefaultConfig()
	cfg.Listen, cfg.Token, cfg.Logger, cfg.Identities = "127.0.0.1:0", token, quiet(), ids
	s, err := natsd.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func keeper(t *testing.T, pub ed25519.PublicKey, path string, reg ...prometheus.Registerer) *Keeper {
	cfg := DefaultConfig()
	if len(reg) > 0 {
		cfg.Registerer = reg[0]
	}
	cfg.Name, cfg.Keys, cfg.CachePath, cfg.Logger, cfg.Poll = "leaf-test", []ed25519.PublicKey{pub}, path, quiet(), 20*time.Millisecond
	cfg.SnapshotTimeout = 2 * time.Second
	k, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func run(t *testing.T, k *Keeper, url string, hubUp func() bool) {
	nc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx, nc, hubUp) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
}

func ask(t *testing.T, url string) ([]byte, error) {
	nc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req, _ := tablewire.Encode(&tablev1.SnapshotRequest{Schema: tablewire.Schema, Node: "edge-x"})
	m, err := nc.Request(tablewire.SubjectSnapshot, req, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func revisionOf(t *testing.T, b []byte) uint64 {
	r := &tablev1.SnapshotReply{}
	if err := proto.Unmarshal(b, r); err != nil {
		t.Fatal(err)
	}
	return r.GetTable().GetRevision()
}

// While the hub is reachable the control plane answers every snapshot
// request, even one the keeper could answer with an older table; while
// it is cut off the keeper answers with exactly the bytes it was given;
// when the hub returns, a request that reaches the keeper is forwarded.
func TestKeeperAnswersOnlyWhileTheHubIsAway(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := server(t, nil)
	c := newControl(t, s.ClientURL(), priv)
	path := filepath.Join(t.TempDir(), "table.snap")
	reg := prometheus.NewRegistry()
	k := keeper(t, pub, path, reg)
	var up atomic.Bool
	up.Store(true)
	run(t, k, s.ClientURL(), up.Load)

	snap5 := c.table(table(5, nil))
	wait.For(t, 10*time.Second, "the keeper to hold revision 5", func() bool { return k.Status().Revision == 5 })
	if st := k.Status(); st.Answering {
		t.Fatalf("keeper answers while the hub is up: %+v", st)
	}
	c.table(table(6, nil))
	// The keeper may lag; the control plane answers with 6 regardless.
	for range 5 {
		b, err := ask(t, s.ClientURL())
		if err != nil || revisionOf(t, b) != 6 {
			t.Fatalf("while the hub is up, a snapshot request got revision %d (%v); want the control plane's 6", revisionOf(t, b), err)
		}
	}
	wait.For(t, 10*time.Second, "the keeper to hold revision 6", func() bool { return k.Status().Revision == 6 })
	onDisk, err := tablewire.ReadCache(path, tablewire.CacheLeafSnapshot, 1<<20)
	if err != nil || !bytes.Equal(onDisk, c.snap) {
		t.Fatalf("cache = %d bytes (%v); want the signed reply the control plane sent", len(onDisk), err)
	}
	_ = snap5

	// The cut: the control plane's responders vanish from the leaf.
	c.answer(false)
	up.Store(false)
	wait.For(t, 10*time.Second, "the keeper to answer", func() bool { return k.Status().Answering })
	b, err := ask(t, s.ClientURL())
	if err != nil || !bytes.Equal(b, c.snap) {
		t.Fatalf("cut off: got %d bytes (%v); want the held signed reply, byte for byte", len(b), err)
	}
	if k.Status().Served == 0 {
		t.Fatal("served counter did not move")
	}
	if v := promtest.Values(t, reg, "meridian_leaf_snapshot_requests_total")[`result="served"`]; v < 1 {
		t.Fatalf("meridian_leaf_snapshot_requests_total{served} = %v", v)
	}
	if v := promtest.Values(t, reg, "meridian_leaf_answering")[""]; v != 1 {
		t.Fatalf("meridian_leaf_answering = %v while cut off", v)
	}
	if v := promtest.Values(t, reg, "meridian_leaf_table_revision")[""]; v != 6 {
		t.Fatalf("meridian_leaf_table_revision = %v, want 6", v)
	}

	// The hub returns with a newer table before the keeper noticed: the
	// request reaching the keeper is forwarded, not answered from 6.
	c.answer(true)
	c.mu.Lock()
	b7, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: table(7, nil)})
	c.snap, c.rev = tablewire.Sign(c.key, tablewire.ContextSnapshot, tablewire.SignatureField, b7), 7
	c.mu.Unlock()
	// Hold the keeper's loop from noticing by flipping up only now; a
	// request may reach either responder, and both give 7.
	up.Store(true)
	for range 3 {
		b, err := ask(t, s.ClientURL())
		if err != nil || revisionOf(t, b) != 7 {
			t.Fatalf("after the hub returned: revision %d (%v); want 7", revisionOf(t, b), err)
		}
	}
	c.heartbeat()
	wait.For(t, 10*time.Second, "the keeper to stop answering and hold 7", func() bool {
		st := k.Status()
		return !st.Answering && st.Revision == 7
	})
}

// A snapshot another key signed, or one from another cluster, is never
// kept; a good cache survives a restart, and a damaged one is ignored.
func TestKeeperRefusesForgedSnapshots(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s := server(t, nil)
	forger := newControl(t, s.ClientURL(), other)
	path := filepath.Join(t.TempDir(), "table.snap")
	k := keeper(t, pub, path)
	run(t, k, s.ClientURL(), func() bool { return true })
	forger.table(table(9, nil))
	// Heartbeats signed by the wrong key do not even make it ask.
	forger.mu.Lock()
	forger.rev = 9
	forger.mu.Unlock()
	good := newControl(t, s.ClientURL(), priv)
	good.answer(false)
	good.heartbeat() // revision 0: nothing to fetch
	// Ask directly: the forged reply is refused.
	if err := k.keep(forger.snap); err == nil {
		t.Fatal("kept a snapshot signed by another key")
	}
	other2 := table(3, nil)
	other2.ClusterId = "elsewhere"
	b, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: other2})
	k2 := keeper(t, pub, path)
	k2.cfg.ClusterID = "gen"
	if err := k2.keep(tablewire.Sign(priv, tablewire.ContextSnapshot, tablewire.SignatureField, b)); err == nil {
		t.Fatal("kept another cluster's table")
	}
	if k.Status().Revision != 0 {
		t.Fatalf("keeper holds revision %d from a forger", k.Status().Revision)
	}

	// A good one is kept and survives a restart.
	b, _ = tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: table(4, nil)})
	if err := k.keep(tablewire.Sign(priv, tablewire.ContextSnapshot, tablewire.SignatureField, b)); err != nil {
		t.Fatal(err)
	}
	if again := keeper(t, pub, path); again.Status().Revision != 4 {
		t.Fatalf("restarted keeper holds %d, want 4 from its cache", again.Status().Revision)
	}
	// A leaf restarted while its region is cut off answers from disk.
	cold := keeper(t, pub, path)
	s2 := server(t, nil)
	run(t, cold, s2.ClientURL(), func() bool { return false })
	wait.For(t, 10*time.Second, "the restarted keeper to answer", func() bool { return cold.Status().Answering })
	if b, err := ask(t, s2.ClientURL()); err != nil || revisionOf(t, b) != 4 {
		t.Fatalf("restarted while cut off: revision %d (%v), want 4 from disk", revisionOf(t, b), err)
	}
	raw, _ := os.ReadFile(path)
	raw[len(raw)-1] ^= 0xff
	os.WriteFile(path, raw, 0o600)
	if again := keeper(t, pub, path); again.Status().Revision != 0 {
		t.Fatalf("a damaged cache was used: revision %d", again.Status().Revision)
	}
}

// The leaf admits the edges its table lists with a NATS key, each with
// an edge's permissions, and closes a revoked edge's connection when the
// table that revokes it arrives.
func TestKeeperAdmitsTheTablesEdges(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	kp, _ := nkeys.CreateUser()
	upub, _ := kp.PublicKey()
	path := filepath.Join(t.TempDir(), "table.snap")
	k := keeper(t, pub, path)
	s := server(t, k)
	k.OnIdentities = func() { s.Refresh() }
	c := newControl(t, s.ClientURL(), priv)
	run(t, k, s.ClientURL(), func() bool { return true })

	connect := func() (*nats.Conn, error) {
		return nats.Connect(s.ClientURL(), nats.Nkey(upub, kp.Sign), nats.MaxReconnects(0),
			nats.CustomInboxPrefix(tablewire.InboxPrefix("edge-1")))
	}
	if nc, err := connect(); err == nil {
		nc.Close()
		t.Fatal("an edge connected before any table named it")
	}
	c.table(table(2, map[string]string{"edge-1": upub}))
	wait.For(t, 10*time.Second, "the keeper to admit edge-1", func() bool { _, ok := k.EdgeByKey(upub); return ok })
	nc, err := connect()
	if err != nil {
		t.Fatalf("edge-1 could not connect: %v", err)
	}
	defer nc.Close()
	// Its permissions are an edge's: a heartbeat it sends is refused.
	errs := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	nc.Publish(tablewire.SubjectHeartbeat, []byte("forged"))
	nc.Flush()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a heartbeat from an edge was not refused on the leaf")
	}
	c.table(table(3, map[string]string{"edge-1": upub}, "edge-1"))
	wait.For(t, 10*time.Second, "the revoked edge's connection to close", nc.IsClosed)
	if nc, err := connect(); err == nil {
		nc.Close()
		t.Fatal("a revoked edge connected")
	}
}
