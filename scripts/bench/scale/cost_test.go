package scale

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-mesh/meridian/edge/gossip"
)

// A node's steady-state gossip cost has two parts, measured apart:
//
//   - packets (probes, acks, gossip of changes): counted over a window once
//     the broadcasts of the simultaneous joins have drained (settle);
//   - push-pull, the full-state exchange each node starts with one random
//     peer every PushPullInterval scaled by memberlist (30 s up to 32
//     nodes, then × ⌈log₂ n − 5⌉ + 1). One exchange is measured (both
//     sides' bytes, the median of several exchanges started on purpose)
//     and divided by the interval: every node starts one exchange per
//     interval, so per node the fleet sends one exchange's bytes per
//     interval. A window short enough for this harness would catch a few
//     push-pulls at 1,000 nodes, or none, and memberlist staggers the
//     first one by up to 30 s after start: counting them in the window
//     would be noise.

// pushPullInterval is memberlist's push-pull period for an n-node pool
// under the edge's profile (memberlist util.go pushPullScale).
func pushPullInterval(n int) time.Duration {
	base := memberlist.DefaultLANConfig().PushPullInterval
	if n <= 32 {
		return base
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(32))+1) * base
}

func packetBytes(nodes []*gossip.Node) uint64 {
	var s uint64
	for _, g := range nodes {
		s += g.Stats().PacketBytesSent
	}
	return s
}

// settle waits, at least 10 s and at most limit, until the nodes' packet
// rate stops falling (a 4 s slice at least 90 % of the one before): the
// joins' broadcasts have drained.
func settle(ctx context.Context, nodes []*gossip.Node, limit time.Duration) time.Duration {
	start := time.Now()
	rate := func() float64 {
		b0 := packetBytes(nodes)
		sleep(ctx, 4*time.Second)
		return float64(packetBytes(nodes) - b0)
	}
	prev := rate()
	for ctx.Err() == nil && time.Since(start) < limit {
		r := rate()
		if r >= 0.9*prev && time.Since(start) >= 10*time.Second {
			break
		}
		prev = r
	}
	return time.Since(start)
}

// exchangeBytes is the median size, both directions, of a push-pull
// between two random members of pool, over k exchanges (a join to one
// peer is a push-pull).
func exchangeBytes(pool []*gossip.Node, k int) float64 {
	if len(pool) < 2 {
		return 0
	}
	var sizes []float64
	for range k {
		i := rand.IntN(len(pool))
		j := (i + 1 + rand.IntN(len(pool)-1)) % len(pool)
		a, b := pool[i], pool[j]
		s0 := a.Stats().StreamBytesSent + b.Stats().StreamBytesSent
		if _, err := a.Join(b.Addr()); err != nil {
			continue
		}
		time.Sleep(20 * time.Millisecond) // the responder's counter
		sizes = append(sizes, float64(a.Stats().StreamBytesSent+b.Stats().StreamBytesSent-s0))
	}
	if len(sizes) == 0 {
		return 0
	}
	slices.Sort(sizes)
	return sizes[len(sizes)/2]
}
