package scale

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/shared/testkit/gossipnet"
)

// wanPerRegion is how many designated edges per region also join the
// WAN pool in the regional layout.
const wanPerRegion = 3

// measurePools runs n gossip nodes (no table clients) in one layout and
// measures their steady-state cost:
//   - "global": one pool of n;
//   - "regional": one pool per region (n/regions each) plus a WAN pool of
//     wanPerRegion designated edges per region, each of which runs a
//     second node. Every pool uses the edge's shipped profile.
func measurePools(ctx context.Context, n int, layout string) (p PoolRow) {
	p.N, p.Layout, p.TimerScale = n, layout, timerScale(n)
	mem := gossipnet.New()
	var all []*gossip.Node
	defer func() {
		parallel(len(all), 16, func(i int) error { all[i].Kill(); return nil })
	}()
	// pools[k] are the nodes of pool k; owner[node] is the edge it runs for.
	var pools [][]*gossip.Node
	owner := map[*gossip.Node]int{}
	designated := map[int]bool{}
	add := func(pool int, edge int, label string) error {
		g, err := gossip.New(gossipConfig(nodeID(edge), fmt.Sprintf("r%d", edge%regions), label, mem, p.TimerScale), quiet)
		if err != nil {
			return err
		}
		for len(pools) <= pool {
			pools = append(pools, nil)
		}
		pools[pool] = append(pools[pool], g)
		owner[g] = edge
		all = append(all, g)
		return nil
	}
	var err error
	switch layout {
	case "global":
		for i := range n {
			if err = add(0, i, "scale"); err != nil {
				break
			}
		}
	case "regional":
		for i := range n {
			if err = add(i%regions, i, fmt.Sprintf("scale-r%d", i%regions)); err != nil {
				break
			}
			if i/regions < wanPerRegion {
				designated[i] = true
				if err = add(regions, i, "scale-wan"); err != nil {
					break
				}
			}
		}
	default:
		err = fmt.Errorf("unknown layout %q", layout)
	}
	if err != nil {
		p.Failed = err.Error()
		return p
	}
	var sizes []string
	for _, pool := range pools {
		sizes = append(sizes, fmt.Sprint(len(pool)))
	}
	p.Pools = strings.Join(sizes, " + ")
	start := time.Now()
	for _, pool := range pools {
		if err := joinTree(pool); err != nil {
			p.Failed = "join: " + err.Error()
			return p
		}
	}
	if err := converge(ctx, 180*time.Second, pollStep(n, 500*time.Millisecond), pools); err != nil {
		p.Failed = err.Error()
		return p
	}
	p.Converge = time.Since(start)

	p.Settle = settle(ctx, all, 150*time.Second)
	per := func() []uint64 {
		b := make([]uint64, n)
		for _, g := range all {
			b[owner[g]] += g.Stats().PacketBytesSent
		}
		return b
	}
	b0, cpu0, w0 := per(), cpuTime(), time.Now()
	if sleep(ctx, *poolWindow) != nil {
		p.Failed = "deadline"
		return p
	}
	b1, secs := per(), time.Since(w0).Seconds()
	p.CPUPerNodePct = 100 * (cpuTime() - cpu0).Seconds() / secs / float64(n)
	// Push-pull per pool: one exchange per member per interval.
	pp := make([]float64, len(pools))
	for k, pool := range pools {
		pp[k] = exchangeBytes(pool, 9) / pushPullInterval(len(pool)).Seconds()
	}
	edgePP := make([]float64, n)
	for k, pool := range pools {
		for _, g := range pool {
			edgePP[owner[g]] += pp[k]
		}
	}
	var total, reg, wan, pkt float64
	var nreg, nwan int
	for i := range n {
		probes := float64(b1[i]-b0[i]) / secs * float64(p.TimerScale) // see Row.PacketBytes
		d := probes + edgePP[i]
		pkt += probes
		total += d
		if designated[i] {
			wan += d
			nwan++
		} else {
			reg += d
			nreg++
		}
	}
	p.BytesPerNode = total / float64(n)
	p.PacketBytes = pkt / float64(n)
	if nreg > 0 {
		p.BytesRegular = reg / float64(nreg)
	}
	if nwan > 0 {
		p.BytesWAN = wan / float64(nwan)
	}
	return p
}
