package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// suspectIn reports whether v sees id as suspect.
func suspectIn(v *Node, id string) error {
	m, ok := member(v, id)
	if !ok || !m.Suspect {
		return fmt.Errorf("%s does not suspect %s (known %v)", v.ID(), id, ok)
	}
	return nil
}

// TestSuspicionSpreadsAndIsRefuted: a suspicion one node raises reaches
// the others, which mark the member suspect; a live suspect refutes it
// and the mark clears everywhere.
func TestSuspicionSpreadsAndIsRefuted(t *testing.T) {
	nodes := startCluster(t, 4, func(i int) Config { return fastConfig(nodeID(i)) })
	wait.For(t, 30*time.Second, "convergence", func() error { return allSee(nodes, nodes, StateAlive) })
	nodes[3].SetReadyModels([]string{"m"})

	start := time.Now()
	nodes[0].Suspect(nodes[3].ID())
	// nodes[3] is alive and hears it too, so it refutes: the mark may
	// be brief. Catch it on one node at least.
	seen := false
	for time.Since(start) < 5*time.Second && !seen {
		for _, v := range nodes[1:3] {
			if suspectIn(v, nodes[3].ID()) == nil {
				seen = true
				t.Logf("%s marked %s suspect %v after the suspicion", v.ID(), nodes[3].ID(), time.Since(start))
			}
		}
		time.Sleep(time.Millisecond)
	}
	if !seen {
		t.Log("the refutation outran the suspicion everywhere")
	}
	wait.For(t, 5*time.Second, "the refutation clears it", func() error {
		for _, v := range nodes[:3] {
			if suspectIn(v, nodes[3].ID()) == nil {
				return fmt.Errorf("%s still suspects it", v.ID())
			}
		}
		return nil
	})
	// The refutation kept the models. A member's models are listed once
	// its record and its meta's digest agree, and the meta may still be
	// on its way: wait for that. A refutation that dropped the models
	// would leave them unlisted for good (nothing broadcasts them again).
	wait.For(t, 15*time.Second, "the refutation keeps the models", func() error {
		if m, _ := member(nodes[1], nodes[3].ID()); len(m.ReadyModels) != 1 {
			return fmt.Errorf("after the refutation %s lists models %v (stale %v)", nodes[3].ID(), m.ReadyModels, m.ModelsStale)
		}
		return nil
	})
}

// TestSuspicionOfDeadNodeHoldsAndExpires: a killed node cannot refute,
// so the others keep it suspect, from well before memberlist declares it
// dead, until SuspicionTimeout.
func TestSuspicionOfDeadNodeHoldsAndExpires(t *testing.T) {
	nodes := startCluster(t, 3, func(i int) Config {
		c := fastConfig(nodeID(i))
		c.ProbeInterval = time.Hour // memberlist never notices: suspicion alone
		c.SuspicionTimeout = time.Second
		return c
	})
	wait.For(t, 30*time.Second, "convergence", func() error { return allSee(nodes, nodes, StateAlive) })
	nodes[2].Kill()
	start := time.Now()
	nodes[0].Suspect(nodes[2].ID())
	wait.For(t, 2*time.Second, "nodes[1] suspects the dead node", func() error { return suspectIn(nodes[1], nodes[2].ID()) })
	t.Logf("suspicion reached %s in %v", nodes[1].ID(), time.Since(start))
	if suspectIn(nodes[0], nodes[2].ID()) == nil {
		t.Error("the suspecting node marked its own view: its link is its evidence")
	}
	select {
	case <-nodes[1].Changed():
	default:
		t.Error("Changed not signalled")
	}
	wait.For(t, 3*time.Second, "the suspicion expires", func() error {
		if suspectIn(nodes[1], nodes[2].ID()) == nil {
			return fmt.Errorf("still suspect")
		}
		return nil
	})
}

func TestSuspicionDecode(t *testing.T) {
	for _, b := range [][]byte{nil, {msgSuspect}, []byte("\x03{}"), []byte("\x03{\"n\":\"x\"}"), []byte("\x03not json")} {
		if _, err := decodeSuspicion(b); err == nil {
			t.Errorf("decoded %q", b)
		}
	}
	s := suspicion{Node: "a", By: "b", At: 5}
	got, err := decodeSuspicion(encodeSuspicion(s))
	if err != nil || got != s {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}
