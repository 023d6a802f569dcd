package tablesync

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// forge sends raw bytes signed by key (nil: unsigned).
func (b *bus) forge(subject string, key ed25519.PrivateKey, raw []byte) {
	if key != nil {
		raw = sign(key, subject, raw)
	}
	b.nc.Publish(subject, raw)
	b.nc.Flush()
}

// A table at the highest revision, pointing nowhere good, signed by
// another key or not at all, is refused: nothing applied, the old table
// kept, the refusal in the status and the report. So are forged
// heartbeats and snapshot replies.
func TestForgedTablesAreRefused(t *testing.T) {
	b := newBus(t)
	b.serve(tableAt(5, "a"))
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, filepath.Join(t.TempDir(), "table.pb"))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g.revision() != 5 {
		t.Fatalf("start: revision %d", g.revision())
	}
	reports := make(chan *tablev1.AppliedReport, 64)
	sub, _ := b.nc.Subscribe(tablewire.SubjectApplied, func(m *nats.Msg) {
		r := &tablev1.AppliedReport{}
		if proto.Unmarshal(m.Data, r) == nil {
			select {
			case reports <- r:
			default:
			}
		}
	})
	defer sub.Unsubscribe()

	evil := tableAt(1<<63, "a", "evil")
	raw, _ := tablewire.Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: evil}})
	b.forge(tablewire.SubjectUpdate, otherKey, raw)
	b.forge(tablewire.SubjectUpdate, nil, raw)
	// A valid heartbeat signature is not a table signature.
	b.forge(tablewire.SubjectUpdate, nil, sign(testKey, tablewire.SubjectHeartbeat, raw))
	hb, _ := tablewire.Encode(&tablev1.Heartbeat{Schema: tablewire.Schema, Revision: 1 << 63, IntervalMs: 1})
	b.forge(tablewire.SubjectHeartbeat, otherKey, hb)

	wait.For(t, 5*time.Second, "the refusal in the status", func() bool { return s.Status().Unverified != "" })
	var rep *tablev1.AppliedReport
	wait.For(t, 5*time.Second, "the refusal in a report", func() bool {
		for {
			select {
			case rep = <-reports:
				if rep.GetUnverified() != "" {
					return true
				}
			default:
				return false
			}
		}
	})
	if !strings.Contains(rep.GetUnverified(), "signature") {
		t.Fatalf("report says %q", rep.GetUnverified())
	}
	// The forged heartbeat would have made the edge fetch a snapshot
	// and counted it behind; the forged snapshot reply is refused too.
	b.mu.Lock()
	b.key = otherKey
	b.snap = evil
	b.mu.Unlock()
	before := s.m.unverifiedCount("snapshot")
	for i := 0; i < 20 && s.m.unverifiedCount("snapshot") == before; i++ {
		b.heartbeat(9) // genuine: the edge is behind and asks for a snapshot
		time.Sleep(50 * time.Millisecond)
	}
	if s.m.unverifiedCount("snapshot") == before {
		t.Fatal("the edge never refused the forged snapshot reply")
	}
	if g.revision() != 5 || s.Status().Revision != 5 {
		t.Fatalf("a forged message was applied: revision %d, %+v", g.revision(), s.Status())
	}
}

// A table from another cluster, even signed with the pinned key (a
// backup of another cluster restored under the same key), is refused.
func TestOtherClusterRefused(t *testing.T) {
	b := newBus(t)
	t5 := tableAt(5, "a")
	t5.ClusterId, t5.Epoch = "cluster-a", 1
	b.serve(t5)
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, "")
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g.revision() != 5 || s.Status().ClusterID != "cluster-a" {
		t.Fatalf("start: %+v", s.Status())
	}
	other := tableAt(9, "a", "b")
	other.ClusterId, other.Epoch = "cluster-b", 7
	b.publish(tablewire.SubjectUpdate, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: other}})
	wait.For(t, 5*time.Second, "the refusal", func() bool { return strings.Contains(s.Status().Unverified, "cluster-b") })
	if g.revision() != 5 {
		t.Fatalf("another cluster's table applied: %d", g.revision())
	}
}

// A restored control plane raises its epoch: the edge then accepts a
// lower revision, and only then.
func TestHigherEpochMovesBack(t *testing.T) {
	b := newBus(t)
	t50 := tableAt(50, "a")
	t50.ClusterId, t50.Epoch = "c", 1
	b.serve(t50)
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, "")
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := tableAt(20, "a", "b")
	old.ClusterId, old.Epoch = "c", 1
	b.publish(tablewire.SubjectUpdate, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: old}})
	restored := tableAt(21, "a", "c")
	restored.ClusterId, restored.Epoch = "c", 2
	b.publish(tablewire.SubjectUpdate, &tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: restored}})
	wait.For(t, 5*time.Second, "the restored table", func() bool { return g.revision() == 21 })
	if st := s.Status(); st.Epoch != 2 {
		t.Fatalf("status %+v", st)
	}
}

// A heartbeat with a 1 ms interval (signed: a misconfigured leader) does
// not make the edge check and report every millisecond.
func TestTinyHeartbeatIntervalIgnored(t *testing.T) {
	b := newBus(t)
	b.serve(tableAt(5, "a"))
	s, _ := newSyncer(t, []string{b.ns.ClientURL()}, "")
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	sub, _ := b.nc.Subscribe(tablewire.SubjectApplied, func(*nats.Msg) { n.Add(1) })
	defer sub.Unsubscribe()
	// Heartbeats for a revision the edge lacks would make it stale after
	// StaleAfter intervals: with a 1 ms interval it would flap and report
	// on every check.
	for i := 0; i < 20; i++ {
		b.publish(tablewire.SubjectHeartbeat, &tablev1.Heartbeat{Schema: tablewire.Schema, Revision: 5, IntervalMs: 1})
		time.Sleep(20 * time.Millisecond)
	}
	if c := n.Load(); c > 10 {
		t.Fatalf("%d reports in 400 ms of 1 ms heartbeats", c)
	}
}

func (m *metrics) unverifiedCount(kind string) float64 {
	var d dto.Metric
	m.unverified.WithLabelValues(kind).Write(&d)
	return d.GetCounter().GetValue()
}

// SetTrust swaps the keys a running edge checks against (a joined
// edge's renewal): a table signed by the new key applies, one signed by
// the key it replaced no longer does, and a cluster ID set with it is
// enforced.
func TestSetTrustSwapsKeys(t *testing.T) {
	b := newBus(t)
	b.serve(tableAt(5, "a"))
	s, g := newSyncer(t, []string{b.ns.ClientURL()}, "")
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetTrust(nil, ""); err == nil {
		t.Fatal("SetTrust took no keys")
	}
	full := func(tab *tablev1.RoutingTable) []byte {
		raw, _ := tablewire.Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: tab}})
		return raw
	}
	b.forge(tablewire.SubjectUpdate, otherKey, full(tableAt(6, "a", "b")))
	wait.For(t, 5*time.Second, "the refusal", func() bool { return strings.Contains(s.Status().Unverified, "signature") })
	if err := s.SetTrust([]ed25519.PublicKey{otherKey.Public().(ed25519.PublicKey)}, "cluster-x"); err != nil {
		t.Fatal(err)
	}
	t7 := tableAt(7, "a", "b")
	t7.ClusterId = "cluster-x"
	b.forge(tablewire.SubjectUpdate, otherKey, full(t7))
	wait.For(t, 5*time.Second, "the table signed by the new key", func() bool { return g.revision() == 7 })
	t8 := tableAt(8, "a")
	t8.ClusterId = "cluster-x"
	b.forge(tablewire.SubjectUpdate, testKey, full(t8))
	t9 := tableAt(9, "a")
	t9.ClusterId = "cluster-y"
	b.forge(tablewire.SubjectUpdate, otherKey, full(t9))
	wait.For(t, 5*time.Second, "the other cluster's refusal", func() bool { return strings.Contains(s.Status().Unverified, "cluster-y") })
	if g.revision() != 7 {
		t.Fatalf("revision %d after tables signed by the replaced key or from another cluster", g.revision())
	}
}
