package tablesync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/natsd"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

const token = "tablesync-test-token-0123456789"

// testKey signs what the test buses publish; newSyncer pins its public
// key. otherKey is an attacker's.
var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
)

// sign signs an encoded message as the leader would for subject.
func sign(key ed25519.PrivateKey, subject string, raw []byte) []byte {
	switch subject {
	case tablewire.SubjectHeartbeat:
		return tablewire.Sign(key, tablewire.ContextHeartbeat, tablewire.HeartbeatSignatureField, raw)
	case tablewire.SubjectSnapshot:
		return tablewire.Sign(key, tablewire.ContextSnapshot, tablewire.SignatureField, raw)
	}
	return tablewire.Sign(key, tablewire.ContextUpdate, tablewire.SignatureField, raw)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tableAt is a valid table at rev with n extra models.
func tableAt(rev uint64, models ...string) *tablev1.RoutingTable {
	t := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: rev, Entities: &tablev1.Entities{
		Providers: []*controlv1.Provider{{Id: "p", Kind: "openai", BaseUrl: "http://127.0.0.1:1/v1"}},
	}}
	for _, m := range models {
		t.Entities.Models = append(t.Entities.Models, &controlv1.Model{Id: m})
		t.Entities.Routes = append(t.Entities.Routes, &controlv1.Route{Model: m, Targets: []*controlv1.Target{{Provider: "p"}}})
	}
	tablewire.Sort(t.Entities)
	return t
}

// bus is a NATS server with a hand-driven control node.
type bus struct {
	t    *testing.T
	ns   *natsd.Server
	nc   *nats.Conn
	mu   sync.Mutex
	snap *tablev1.RoutingTable
	asks int
	key  ed25519.PrivateKey // signs snapshot replies
}

func newBus(t *testing.T) *bus {
	cfg := natsd.DefaultConfig()
	cfg.Listen, cfg.Token, cfg.Logger = "127.0.0.1:0", token, quiet
	ns, err := natsd.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b := &bus{t: t, ns: ns, nc: nc, key: testKey}
	nc.Subscribe(tablewire.SubjectSnapshot, func(m *nats.Msg) {
		b.mu.Lock()
		b.asks++
		reply, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: b.snap})
		key := b.key
		b.mu.Unlock()
		m.Respond(sign(key, tablewire.SubjectSnapshot, reply))
	})
	nc.Flush()
	return b
}

func (b *bus) serve(t *tablev1.RoutingTable) {
	b.mu.Lock()
	b.snap = t
	b.mu.Unlock()
}

func (b *bus) snapshots() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.asks
}

func (b *bus) publish(subject string, m proto.Message) {
	raw, err := tablewire.Encode(m)
	if err != nil {
		b.t.Fatal(err)
	}
	b.nc.Publish(subject, sign(testKey, subject, raw))
	b.nc.Flush()
}

func (b *bus) delta(prev, next *tablev1.RoutingTable) {
	b.publish(tablewire.SubjectUpdate, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Delta{Delta: tablewire.Diff(prev, next)}})
}

func (b *bus) heartbeat(rev uint64) {
	b.publish(tablewire.SubjectHeartbeat, &tablev1.Heartbeat{Schema: tablewire.Schema, Revision: rev, IntervalMs: 50})
}

type gateway struct {
	mu  sync.Mutex
	tab *table.Table
}

func (g *gateway) apply(t *table.Table) error {
	if err := t.Validate(); err != nil {
		return err
	}
	g.mu.Lock()
	g.tab = t
	g.mu.Unlock()
	return nil
}

func (g *gateway) revision() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tab == nil {
		return 0
	}
	return g.tab.Revision
}

func newSyncer(t *testing.T, urls []string, cache string) (*Syncer, *gateway) {
	g := &gateway{}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.URLs, cfg.Token, cfg.CachePath = "edge-t", urls, token, cache
	cfg.HeartbeatInterval, cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 20*time.Millisecond, 200*time.Millisecond
	cfg.ReconnectWait, cfg.ReconnectJitter, cfg.SnapshotTimeout = 20*time.Millisecond, 20*time.Millisecond, 500*time.Millisecond
	cfg.Apply, cfg.Logger = g.apply, quiet
	cfg.TableKeys = []ed25519.PublicKey{testKey.Public().(ed25519.PublicKey)}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, g
}

func TestDeltasGapsAndStaleness(t *testing.T) {
	b := newBus(t)
	t5 := tableAt(5, "a")
	b.serve(t5)
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, filepath.Join(t.TempDir(), "table.pb"))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g.revision() != 5 || s.Status().Source != SourceControl {
		t.Fatalf("after start: revision %d, %+v", g.revision(), s.Status())
	}

	// A delta that follows applies without a snapshot.
	asks := b.snapshots()
	t6 := tableAt(6, "a", "b")
	b.delta(t5, t6)
	wait.For(t, 5*time.Second, "revision 6", func() bool { return g.revision() == 6 })
	if b.snapshots() != asks {
		t.Fatalf("a delta that follows fetched a snapshot: %+v", s.Status())
	}

	// A delta that skips a revision is a gap: the edge fetches a snapshot.
	t7, t8 := tableAt(7, "a", "b", "c"), tableAt(8, "a", "b", "c", "d")
	b.serve(t8)
	b.delta(t7, t8)
	wait.For(t, 5*time.Second, "revision 8 from a snapshot", func() bool { return g.revision() == 8 })
	if b.snapshots() == asks {
		t.Fatal("the gap did not fetch a snapshot")
	}

	// Heartbeats keep the table current; silence makes it stale.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				b.heartbeat(8)
			}
		}
	}()
	wait.For(t, 5*time.Second, "a current table", func() bool { return !s.Status().Stale })
	close(stop)
	wg.Wait()
	wait.For(t, 5*time.Second, "a stale table", func() bool { return s.Status().Stale })

	// A heartbeat ahead of the edge, with the update lost, brings a
	// snapshot.
	t9 := tableAt(9, "a")
	b.serve(t9)
	wait.For(t, 5*time.Second, "catching up from heartbeats", func() bool {
		b.heartbeat(9)
		time.Sleep(20 * time.Millisecond)
		return g.revision() == 9
	})
	wait.For(t, 5*time.Second, "the table on disk", func() error {
		if r := s.Status().CachedRevision; r != 9 {
			return fmt.Errorf("Status().CachedRevision is %d", r)
		}
		t, err := readCache(s.cfg.CachePath, tablewire.DefaultMaxBytes)
		if err != nil || t.GetRevision() != 9 {
			return fmt.Errorf("the file holds revision %d (%v)", t.GetRevision(), err)
		}
		return nil
	})
}

func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "nats://" + l.Addr().String()
}

func TestStartWithoutControlPlane(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "table.pb")
	seed := &table.Table{Providers: []table.Provider{{ID: "p", Kind: "openai", BaseURL: "http://127.0.0.1:1/v1"}}}

	// Nothing on disk: the config's table, stale.
	s, g := newSyncer(t, []string{deadURL(t)}, cache)
	if err := s.Seed(seed); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("start waited %s for an absent control plane", time.Since(start))
	}
	if st := s.Status(); st.Source != SourceConfig || !st.Stale || g.tab == nil || st.CachedRevision != 0 {
		t.Fatalf("status %+v", st)
	}
	s.Close()

	// A damaged file is ignored.
	os.WriteFile(cache, []byte(tablewire.CacheEdgeTable+"\x00\x00\x00\x00garbage"), 0o600)
	s, _ = newSyncer(t, []string{deadURL(t)}, cache)
	s.Seed(seed)
	s.Start(context.Background())
	if st := s.Status(); st.Source != SourceConfig {
		t.Fatalf("damaged cache used: %+v", st)
	}
	s.Close()

	// A good file wins over the config, and is stale.
	b, _ := tablewire.Encode(tableAt(42, "x"))
	if err := writeCache(cache, b); err != nil {
		t.Fatal(err)
	}
	s, g = newSyncer(t, []string{deadURL(t)}, cache)
	s.Seed(seed)
	s.Start(context.Background())
	defer s.Close()
	if st := s.Status(); st.Source != SourceDisk || st.Revision != 42 || st.CachedRevision != 42 || !st.Stale || g.revision() != 42 {
		t.Fatalf("status %+v", st)
	}
}

func TestCacheDetectsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "table.pb")
	b, _ := tablewire.Encode(tableAt(3, "a"))
	if err := writeCache(path, b); err != nil {
		t.Fatal(err)
	}
	got, err := readCache(path, 1<<20)
	if err != nil || got.GetRevision() != 3 {
		t.Fatalf("read back: %v", err)
	}
	raw, _ := os.ReadFile(path)
	raw[len(raw)-1] ^= 0xff
	os.WriteFile(path, raw, 0o600)
	if _, err := readCache(path, 1<<20); !errors.Is(err, tablewire.ErrBadCache) {
		t.Fatalf("flipped byte: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left: %d entries", len(entries))
	}
}

func TestURLsMustNotCarryCredentials(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.URLs, cfg.Token, cfg.Apply = "e", []string{"nats://u:pw@127.0.0.1:4222"}, token, func(*table.Table) error { return nil }
	if _, err := New(cfg); err == nil || strings.Contains(err.Error(), "pw") {
		t.Fatalf("credentials in a URL: %v", err)
	}
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Neither a provider's secret_ref nor its credential reaches the logs,
// whether the ref resolves, fails to, or comes in a rejected table.
func TestSecretsStayOutOfLogs(t *testing.T) {
	const ref, secret = "MERIDIAN_SECRET_HIDDEN_REF_NAME", "sk-very-secret-value"
	b := newBus(t)
	withRefs := func(rev uint64, bad bool) *tablev1.RoutingTable {
		tab := tableAt(rev, "a")
		tab.Entities.Providers = []*controlv1.Provider{
			{Id: "p", Kind: "openai", BaseUrl: "http://127.0.0.1:1/v1", SecretRef: "env:" + ref},
			{Id: "q", Kind: "openai", BaseUrl: "http://127.0.0.1:1/v1", SecretRef: "env:" + ref + "_MISSING"},
		}
		if bad {
			tab.Entities.Providers[0].BaseUrl = "ftp://x"
		}
		return tab
	}
	b.serve(withRefs(3, false))
	logs := &logBuf{}
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, "")
	s.cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.log = s.cfg.Logger
	s.cfg.Resolver.Getenv = func(k string) string {
		if k == ref {
			return secret
		}
		return ""
	}
	s.conv = tablewire.NewConverter(s.cfg.Resolver)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g.revision() != 3 || len(s.Status().Unusable) != 1 {
		t.Fatalf("status %+v", s.Status())
	}
	b.publish(tablewire.SubjectUpdate, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: withRefs(4, true)}})
	wait.For(t, 5*time.Second, "the rejection", func() bool { return s.Status().RejectedRevision == 4 })
	out := logs.String()
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "unusable") {
		t.Fatalf("expected logs missing:\n%s", out)
	}
	if strings.Contains(out, ref) || strings.Contains(out, secret) {
		t.Fatalf("a secret_ref or credential reached the logs:\n%s", out)
	}
	if st := s.Status(); strings.Contains(st.RejectedReason+strings.Join(st.Unusable, ""), ref) {
		t.Fatalf("a secret_ref reached the status: %+v", st)
	}
}

// Every report carries the engine's ready models, sorted; ReportReady
// sends one at once, and a flapping engine makes at most one more per
// ReadyGap, the last state always arriving.
func TestReadyModelsReported(t *testing.T) {
	b := newBus(t)
	b.serve(tableAt(5, "a"))
	var mu sync.Mutex
	var reports []*tablev1.AppliedReport
	sub, err := b.nc.Subscribe(tablewire.SubjectApplied, func(m *nats.Msg) {
		r := &tablev1.AppliedReport{}
		if proto.Unmarshal(m.Data, r) == nil {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	b.nc.Flush()
	last := func() (int, *tablev1.AppliedReport) {
		mu.Lock()
		defer mu.Unlock()
		if len(reports) == 0 {
			return 0, nil
		}
		return len(reports), reports[len(reports)-1]
	}

	var readyMu sync.Mutex
	ready := []string{"tiny", "llama"}
	set := func(ms ...string) {
		readyMu.Lock()
		ready = ms
		readyMu.Unlock()
	}
	s, _ := newSyncer(t, []string{b.ns.ClientURL()}, "")
	s.cfg.ReadyModels = func() []string {
		readyMu.Lock()
		defer readyMu.Unlock()
		return ready
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait.For(t, 5*time.Second, "a report of the ready models", func() bool {
		_, r := last()
		return r != nil && strings.Join(r.GetReadyModels(), ",") == "llama,tiny"
	})

	// Let the start's reports (the apply, turning stale) go out first.
	wait.For(t, 5*time.Second, "the edge to turn stale", func() bool { return s.Status().Stale })
	settled, _ := last()
	wait.For(t, 5*time.Second, "reports to settle", func() bool {
		n, _ := last()
		if n != settled {
			settled = n
			return false
		}
		return true
	})

	set("tiny")
	s.ReportReady()
	wait.For(t, 5*time.Second, "an immediate report", func() bool {
		_, r := last()
		return strings.Join(r.GetReadyModels(), ",") == "tiny"
	})
	before, _ := last()
	start := time.Now()
	for i := range 50 {
		set(fmt.Sprintf("m%02d", i))
		s.ReportReady()
	}
	wait.For(t, 5*time.Second, "the last ready set", func() bool {
		_, r := last()
		return strings.Join(r.GetReadyModels(), ",") == "m49"
	})
	if time.Since(start) < ReadyGap/2 {
		t.Fatalf("the flap's report came %s after the previous one; ReadyGap is %s", time.Since(start), ReadyGap)
	}
	if n, _ := last(); n-before > 2 {
		t.Fatalf("50 changes sent %d reports; want at most 2", n-before)
	}
}

// TestLeafDeltasArePatched checks a delta that edits a route reaches
// Patch, not Apply, with the change named; that a delta adding a model
// goes through Apply; and that a patched table is what the disk keeps.
func TestLeafDeltasArePatched(t *testing.T) {
	b := newBus(t)
	t5 := tableAt(5, "a", "b")
	b.serve(t5)
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, filepath.Join(t.TempDir(), "table.pb"))
	var mu sync.Mutex
	var changes []table.Change
	s.cfg.Patch = func(tab *table.Table, ch table.Change) error {
		mu.Lock()
		changes = append(changes, ch)
		mu.Unlock()
		return g.apply(tab)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t6 := tableAt(6, "a", "b")
	t6.Entities.Routes[1] = &controlv1.Route{Model: "b", Targets: []*controlv1.Target{{Provider: "p", Model: "b2"}}}
	b.delta(t5, t6)
	wait.For(t, 5*time.Second, "revision 6", func() bool { return g.revision() == 6 })
	mu.Lock()
	got := slices.Clone(changes)
	mu.Unlock()
	if len(got) != 1 || !slices.Equal(got[0].Routes, []string{"b"}) {
		t.Fatalf("Patch saw %+v, want one change of route b", got)
	}
	g.mu.Lock()
	if r := g.tab.Routes[1]; r.Model != "b" || r.Targets[0].Model != "b2" {
		t.Fatalf("patched route %+v", r)
	}
	g.mu.Unlock()
	t7 := tableAt(7, "a", "b", "c")
	b.delta(t6, t7)
	wait.For(t, 5*time.Second, "revision 7", func() bool { return g.revision() == 7 })
	mu.Lock()
	if len(changes) != 1 {
		t.Fatalf("a delta adding a model was patched: %+v", changes)
	}
	mu.Unlock()
	wait.For(t, 5*time.Second, "revision 7 on disk", func() bool { return s.Status().CachedRevision == 7 })
}

// TestPatchedTablesAreRebuiltWhole checks that after FullEvery patched
// deltas the next one goes through Apply, whole.
func TestPatchedTablesAreRebuiltWhole(t *testing.T) {
	b := newBus(t)
	prev := tableAt(5, "a", "b")
	b.serve(prev)
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, "")
	var mu sync.Mutex
	patched, applied := 0, 0
	s.cfg.Patch = func(tab *table.Table, ch table.Change) error {
		mu.Lock()
		patched++
		mu.Unlock()
		return g.apply(tab)
	}
	apply := s.cfg.Apply
	s.cfg.Apply = func(tab *table.Table) error {
		mu.Lock()
		applied++
		mu.Unlock()
		return apply(tab)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range FullEvery + 1 {
		next := tableAt(uint64(6+i), "a", "b")
		next.Entities.Routes[0] = &controlv1.Route{Model: "a", Targets: []*controlv1.Target{{Provider: "p", Model: fmt.Sprint("v", i)}}}
		b.delta(prev, next)
		wait.For(t, 5*time.Second, fmt.Sprint("revision ", 6+i), func() bool { return g.revision() == uint64(6+i) })
		prev = next
	}
	mu.Lock()
	defer mu.Unlock()
	if patched != FullEvery || applied != 2 { // the snapshot, then the rebuild
		t.Fatalf("patched %d, applied %d; want %d and 2", patched, applied, FullEvery)
	}
}
