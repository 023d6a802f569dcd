package gossip

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/gossipnet"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// TestInjectedTransport runs three nodes on an in-memory network
// (Config.Transport): they advertise the network's addresses, converge,
// count the bytes they send, and detect a node killed without leaving.
func TestInjectedTransport(t *testing.T) {
	mem := gossipnet.New()
	nodes := startCluster(t, 3, func(i int) Config {
		c := fastConfig(nodeID(i))
		c.Transport = mem.NewTransport()
		return c
	})
	for _, nd := range nodes {
		if !strings.HasPrefix(nd.Addr(), "10.") {
			t.Fatalf("%s advertises %s, not its in-memory address", nd.ID(), nd.Addr())
		}
	}
	wait.For(t, 30*time.Second, "convergence on the in-memory network", func() error { return allSee(nodes, nodes, StateAlive) })
	// Every node probes (packets) and node 1 and 2 joined (streams).
	wait.For(t, 30*time.Second, "every node counts the bytes it sends", func() error {
		for i, nd := range nodes {
			if s := nd.Stats(); s.PacketBytesSent == 0 || (i > 0 && s.StreamBytesSent == 0) {
				return fmt.Errorf("%s counted %+v", nd.ID(), s)
			}
		}
		return nil
	})
	victim := nodes[2]
	bound := DetectionBound(fastConfig("x"), len(nodes))
	victim.Kill()
	if mem.Len() != 2 {
		t.Fatalf("after a kill %d transports are reachable, want 2", mem.Len())
	}
	wait.For(t, bound+schedAllowance+10*time.Second, "the survivors mark the killed node dead", func() error {
		return allSee(nodes[:2], []*Node{victim}, StateDead)
	})
}
