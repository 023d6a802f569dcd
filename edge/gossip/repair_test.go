package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// TestLostModelsBroadcastIsRepaired loses a models broadcast on its way
// to one peer (the peer keeps the older record, as when the kernel drops
// the UDP packets of an overloaded node) with push-pull rounds an hour
// apart. The peer must stop trusting the stale record at once, because
// the owner's meta digest disagrees with it, and must fetch the newer
// record itself instead of waiting for a random push-pull round.
func TestLostModelsBroadcastIsRepaired(t *testing.T) {
	nodes := startCluster(t, 2, func(i int) Config {
		c := fastConfig(nodeID(i))
		c.PushPullInterval = time.Hour
		return c
	})
	a, b := nodes[0], nodes[1]
	view := func() (Member, error) {
		m, ok := member(b, a.ID())
		if !ok {
			return m, fmt.Errorf("%s does not list %s", b.ID(), a.ID())
		}
		return m, nil
	}

	if err := a.SetReadyModels([]string{"tiny"}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "b sees a ready=[tiny]", func() error {
		m, err := view()
		if err != nil {
			return err
		}
		if !slices.Equal(m.ReadyModels, []string{"tiny"}) || m.ModelsStale {
			return fmt.Errorf("b sees a ready=%v stale=%v", m.ReadyModels, m.ModelsStale)
		}
		return nil
	})
	b.tab.mu.Lock()
	old := b.tab.peers[a.ID()].rec
	b.tab.mu.Unlock()

	if err := a.SetReadyModels(nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "b gets a's new meta and record", func() error {
		m, err := view()
		if err != nil {
			return err
		}
		if m.ModelsDigest != emptyDigest || len(m.ReadyModels) != 0 || m.ModelsStale {
			return fmt.Errorf("b sees a ready=%v digest=%x stale=%v", m.ReadyModels, m.ModelsDigest, m.ModelsStale)
		}
		return nil
	})
	// The broadcast of the new record is lost on its way to b: b still
	// holds the old record, while a's meta (spread by memberlist itself)
	// says a serves nothing. A retransmission of the broadcast may still
	// be on its way when the old record is put back (under the race
	// detector a packet can wait in b's socket for a while), and then it
	// repairs b instead of the push-pull; so lose it again until b's own
	// repair is what brings the new record.
	for attempt := 1; ; attempt++ {
		wait.For(t, 30*time.Second, "the broadcast queues drain", func() bool {
			return a.queue.NumQueued() == 0 && b.queue.NumQueued() == 0
		})
		repairs := b.Stats().Repairs
		b.tab.mu.Lock()
		p := b.tab.peers[a.ID()]
		p.rec.ModelsVer, p.rec.Models = old.ModelsVer, slices.Clone(old.Models)
		p.recDigest = ModelsDigest(p.rec.Models)
		b.tab.mu.Unlock()

		m, err := view()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.ReadyModels) != 0 || !m.ModelsStale {
			t.Fatalf("with a record its meta contradicts, b sees a ready=%v stale=%v; want none, stale", m.ReadyModels, m.ModelsStale)
		}
		wait.For(t, 30*time.Second, "b gets a's new record back", func() error {
			b.tab.mu.Lock()
			ver, models := b.tab.peers[a.ID()].rec.ModelsVer, slices.Clone(b.tab.peers[a.ID()].rec.Models)
			b.tab.mu.Unlock()
			if ver <= old.ModelsVer || len(models) != 0 {
				return fmt.Errorf("b holds a's record v%d %v, old v%d", ver, models, old.ModelsVer)
			}
			return nil
		})
		if m, _ := view(); m.ModelsStale || len(m.ReadyModels) != 0 {
			t.Fatalf("after the repair b sees a ready=%v stale=%v", m.ReadyModels, m.ModelsStale)
		}
		// The record arrives inside the push-pull, before it is counted.
		counted := false
		for deadline := time.Now().Add(5 * time.Second); !counted && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			counted = b.Stats().Repairs > repairs
		}
		if counted {
			t.Logf("repaired by b's own push-pull on attempt %d", attempt)
			return
		}
		if attempt == 5 {
			t.Fatalf("b's record was repaired %d times, never by its own push-pull (Stats.Repairs = %d)", attempt, b.Stats().Repairs)
		}
	}
}

// TestStaleRecordTrustedAgainAfterBound: a record that disagrees with its
// meta for staleTrustAfter is believed again (the meta may be the stale
// side, after a dropped update event), so no member loses its models for
// good.
func TestStaleRecordTrustedAgainAfterBound(t *testing.T) {
	tab := newTable()
	tab.setNode("a", "127.0.0.1:1", StateAlive, nil)
	tab.merge(record{Node: "a", ModelsVer: 2, Models: []string{"tiny"}})
	tab.mu.Lock()
	tab.peers["a"].meta = NodeMeta{NodeID: "a", ModelsDigest: emptyDigest}
	tab.mu.Unlock()
	now := time.Now()
	if got := tab.staleRecords("self", now); len(got) != 0 {
		t.Fatalf("repair asked at once: %v; want after %v", got, repairAfter)
	}
	if got := tab.staleRecords("self", now.Add(repairAfter)); !slices.Equal(got, []string{"127.0.0.1:1"}) {
		t.Fatalf("repair after %v = %v", repairAfter, got)
	}
	if got := tab.staleRecords("self", now.Add(repairAfter+time.Millisecond)); len(got) != 0 {
		t.Fatalf("repair again within %v: %v", repairEvery, got)
	}
	p := tab.peers["a"]
	if !p.modelsStale(now.Add(staleTrustAfter - time.Millisecond)) {
		t.Fatal("not stale before staleTrustAfter")
	}
	if p.modelsStale(now.Add(staleTrustAfter)) {
		t.Fatal("still stale at staleTrustAfter")
	}
	tab.merge(record{Node: "a", ModelsVer: 3})
	if p.modelsStale(now) || len(tab.staleRecords("self", now.Add(time.Hour))) != 0 {
		t.Fatal("stale after a record that matches the meta")
	}
}
