package scale

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashicorp/memberlist"
	"math"
	"math/rand/v2"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/gossipnet"
)

// parent is the edge process's line to the parent: one request at a time
// on stdout, the answer on stdin.
type parent struct {
	mu sync.Mutex
	in *bufio.Scanner
}

func (p *parent) call(verb, arg string) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("%s%s %s\n", rpcPrefix, verb, arg)
	if !p.in.Scan() {
		return nil, errors.New("parent gone")
	}
	f := strings.Fields(p.in.Text())
	if len(f) == 0 || f[0] != "ok" {
		return nil, fmt.Errorf("parent: %s", p.in.Text())
	}
	return f[1:], nil
}

func (p *parent) write(ops ...*controlv1.Op) (uint64, error) {
	b, err := proto.Marshal(&controlv1.Write{Ops: ops})
	if err != nil {
		return 0, err
	}
	f, err := p.call("write", base64.StdEncoding.EncodeToString(b))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// control returns the control process's CPU time and resident memory.
func (p *parent) control() (time.Duration, uint64, error) {
	f, err := p.call("control", "")
	if err != nil || len(f) < 2 {
		return 0, 0, fmt.Errorf("control: %v %v", err, f)
	}
	cpu, _ := strconv.ParseInt(f[0], 10, 64)
	rss, _ := strconv.ParseUint(f[1], 10, 64)
	return time.Duration(cpu), rss, nil
}

func (p *parent) result(v any) {
	b, _ := json.Marshal(v)
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("%sresult %s\n", rpcPrefix, b)
}

// runChild is an edge process: mode "edges:<n>" measures a fleet of n
// stand-ins, "pools:<n>:<layout>" the gossip cost of a pool layout.
func runChild(t *testing.T, mode string) {
	p := &parent{in: bufio.NewScanner(os.Stdin)}
	f := strings.Split(mode, ":")
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	// A thousand memberlist instances allocate a compressor per packet
	// (the LAN profile compresses, about 84 KB of LZW tables per packet
	// each way): collect less often, the machine has the memory. A
	// thousand stand-ins hold about 2.4 GB of tables (each its own
	// decoded table of a thousand nodes, as a real edge holds), so the
	// limit leaves room above that.
	debug.SetGCPercent(200)
	debug.SetMemoryLimit(16 << 30) // the machine has 24 GiB
	ctx, cancel := context.WithTimeout(context.Background(), *bound-time.Minute)
	defer cancel()
	if path := os.Getenv("SCALE_CPUPROFILE"); path != "" {
		pf, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(pf) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if addr := os.Getenv("SCALE_PPROF"); addr != "" {
		// A live process to profile (net/http/pprof), for a phase that
		// does not end.
		go http.ListenAndServe(addr, nil)
	}
	if f[0] == "pools" {
		p.result(measurePools(ctx, n, f[2]))
		return
	}
	keys, err := decodeKeys(os.Getenv(envKeys))
	if err != nil {
		t.Fatal(err)
	}
	placeOn, _ := strconv.Atoi(os.Getenv(envPlace))
	r := measure(ctx, n, strings.Split(os.Getenv(envURLs), ","), keys, p, placeOn)
	p.result(r)
}

// edge is one stand-in.
type edge struct {
	id     string
	gw     *gateway.Gateway
	sync   *tablesync.Syncer
	gossip *gossip.Node
	mu     sync.Mutex
	at     map[uint64]time.Time // revision → when applied
	cond   *sync.Cond
}

func (e *edge) applied(rev uint64) {
	e.mu.Lock()
	e.at[rev] = time.Now()
	e.cond.Broadcast()
	e.mu.Unlock()
}

// has reports whether the edge applied rev or later.
func (e *edge) has(rev uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.firstAt(rev)
	return ok
}

// firstAt returns when the edge first applied rev or later; e.mu is held.
func (e *edge) firstAt(rev uint64) (time.Time, bool) {
	best := time.Time{}
	for r, at := range e.at {
		if r >= rev && (best.IsZero() || at.Before(best)) {
			best = at
		}
	}
	return best, !best.IsZero()
}

// syncSpread says how many edges have rev, and the table clients' states.
func syncSpread(edges []*edge, rev uint64) string {
	have, stale, down := 0, 0, 0
	revs := map[uint64]int{}
	for _, e := range edges {
		if e.has(rev) {
			have++
		}
		st := e.sync.Status()
		revs[st.Revision]++
		if st.Stale {
			stale++
		}
		if !st.Connected {
			down++
		}
	}
	return fmt.Sprintf("%d of %d have it; %d stale, %d disconnected; revisions %v", have, len(edges), stale, down, revs)
}

// waitAtLeast returns when the edge applied rev or later.
func (e *edge) waitAtLeast(rev uint64, deadline time.Time) (time.Time, bool) {
	t := time.AfterFunc(time.Until(deadline), func() { e.mu.Lock(); e.cond.Broadcast(); e.mu.Unlock() })
	defer t.Stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if at, ok := e.firstAt(rev); ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		e.cond.Wait()
	}
}

type upLinks struct{}

func (upLinks) Down(string) bool { return false }

// parallel runs f(i) for i in [0, n) on at most workers goroutines and
// returns the first error.
func parallel(n, workers int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// timerScale is what the probe timers and the push-pull interval are
// multiplied by in an n-edge simulation: 1 (the shipped profile) below
// -scale-from edges. A real edge has its own CPU; here n of them share
// two cores, and at 300 and more with the shipped 1 s probes and 500 ms
// probe timeout the acks came late, nodes suspected each other and the
// pool never converged (measured 2026-12-02). Scaled as memberlist's WAN
// profile scales them against LAN; gossip rounds keep the shipped 100 ms
// (they send only while something is queued).
//
// From 1,000 edges the multiplier doubles. With ×5 at 1,000 the members'
// queues, behind a mass join, still held acks past the probe timeout:
// members falsely suspected and then declared dead a hundred others, each
// of which had to refute to all (measured 2026-12-03: a node still saw
// 127 of 1,000 dead a minute after the last join).
func timerScale(n int) int {
	switch {
	case n >= 1000:
		return 2 * *scaleBy
	case n >= *scaleFrom:
		return *scaleBy
	}
	return 1
}

// simPacketSize is the gossip datagram of the scaled rows, in bytes,
// against memberlist's 1,400. A mass join is N² × RetransmitMult ×
// ⌈log₁₀(N+1)⌉ broadcasts (32 M at 1,000), which memberlist packs into
// packets as they fit; at 1,400 bytes that is some three million packets,
// each compressed with a fresh LZW table (about 84 KB allocated each way)
// and encrypted, more than two cores can send and receive, so packets
// queued past the receivers' buffers were lost and the pool never
// converged (measured 2026-12-03: the last wave of a 1,000 run still
// joining after ten minutes at 10 GB). With 8 KB packets the messages
// are the same and the packets six times fewer (bigger ones were
// held, a message at a time, in memberlist's receive queues). Steady-state traffic,
// which the rows report, is probes and acks far below either size, and
// push-pull runs over streams: the bytes measured do not depend on it.
const simPacketSize = 8000

// gossipConfig is the edge's shipped gossip profile on an in-memory
// transport, its probe and push-pull timers multiplied by scale.
func gossipConfig(id, region, label string, mem *gossipnet.Network, scale int) gossip.Config {
	g := gossip.DefaultConfig()
	if scale > 1 {
		lan := memberlist.DefaultLANConfig()
		g.ProbeInterval = time.Duration(scale) * lan.ProbeInterval
		g.ProbeTimeout = time.Duration(scale) * lan.ProbeTimeout
		g.PushPullInterval = time.Duration(scale) * lan.PushPullInterval
	}
	if scale > 1 {
		// Bigger datagrams, which the in-memory network carries: the same
		// broadcasts in a sixth of the packets (see simPacketSize).
		g.PacketSize = simPacketSize
	}
	g.NodeID, g.Region, g.QUICAddr, g.Label = id, region, "127.0.0.1:4433", label
	g.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	g.BindAddr, g.BindPort, g.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
	g.Transport = mem.NewTransport()
	return g
}

// maxWave caps a join wave. Every member learns each newcomer and
// retransmits it: a wave of k into a pool of p is about k·p·32 messages
// to handle, and memberlist holds each received message, with the packet
// it came in, in a queue of up to 1,024 per member until its one handler
// reads it. Doubling waves up to 1,000 (488 newcomers at once) filled
// those queues on two cores and held 10 GB; waves of at most maxWave,
// each drained before the next, keep the queues short.
const maxWave = 100

// waveSize is how many join a pool of p at once: double the pool, at
// most maxWave, and fewer as the pool grows, so that a wave's messages
// (newcomers × pool) stay near what a wave of 100 into 400 costs. At
// 1,000 edges, waves of 100 into 800 and more left the members' queues
// backed up for longer than a probe's timeout: members suspected each
// other, and the refutations and failure broadcasts of those false
// suspicions took the process's two cores for minutes (measured
// 2026-12-03).
func waveSize(p int) int {
	return min(p, maxWave, max(25, 40000/p))
}

// joinTree joins nodes in waves that double the pool, at most maxWave
// newcomers each: each node of a wave joins a random node of the pool so
// far, in parallel, and the wave's broadcasts drain before the next.
func joinTree(nodes []*gossip.Node) error {
	start := time.Now()
	for joined := 1; joined < len(nodes); joined += waveSize(joined) {
		if time.Since(start) > joinBound {
			return fmt.Errorf("%d of %d joined within %v", joined, len(nodes), joinBound)
		}
		wave := nodes[joined:min(joined+waveSize(joined), len(nodes))]
		pool := nodes[:joined]
		err := parallel(len(wave), 16, func(i int) error {
			var err error
			for range 5 { // a loaded machine times joins out now and then
				// One seed per attempt: memberlist pushes and pulls the
				// whole state with every seed it reaches, and one
				// exchange teaches the newcomer everyone.
				if _, err = wave[i].Join(pool[rand.IntN(len(pool))].Addr()); err == nil {
					return nil
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if path := os.Getenv("SCALE_MEMPROFILE"); path != "" && joined+len(wave) == len(nodes) {
			writeHeap(path) // the last wave's peak
		}
		if len(wave) >= 32 {
			drain(nodes[:joined+len(wave)], 30*time.Second)
		}
		progress("joined %d of %d", joined+len(wave), len(nodes))
	}
	return nil
}

// drain waits, at most limit, until the nodes' packet rate stops falling
// (a 1 s slice at least 90 % of the one before): a wave's broadcasts
// have been sent.
func drain(nodes []*gossip.Node, limit time.Duration) {
	start := time.Now()
	prev := uint64(math.MaxUint64)
	for time.Since(start) < limit {
		b0 := packetBytes(nodes)
		time.Sleep(time.Second)
		r := packetBytes(nodes) - b0
		if float64(r) >= 0.9*float64(prev) {
			return
		}
		prev = r
	}
}

// writeHeap writes a heap profile (SCALE_MEMPROFILE) after a collection.
func writeHeap(path string) {
	if pf, err := os.Create(path); err == nil {
		runtime.GC()
		pprof.WriteHeapProfile(pf)
		pf.Close()
	}
}

// progress notes a long phase's progress on stderr, with the time and
// the heap, so a slow fleet shows where it is.
func progress(format string, args ...any) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fmt.Fprintf(os.Stderr, "scale child %s: %s (heap %d MiB)\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...), m.HeapInuse>>20)
}

func measure(ctx context.Context, n int, urls []string, keys []ed25519.PublicKey, p *parent, placeOn int) (r Row) {
	r.N, r.PlaceOn, r.TimerScale = n, placeOn, timerScale(n)
	edges := make([]*edge, n)
	defer func() {
		parallel(n, 16, func(i int) error {
			e := edges[i]
			if e == nil {
				return nil
			}
			if e.sync != nil {
				e.sync.Close()
			}
			e.gw.Close()
			if e.gossip != nil {
				e.gossip.Kill()
			}
			return nil
		})
	}()
	mem := gossipnet.New()
	start := time.Now()
	// Table clients: started in parallel, eight at a time, each with its
	// own NATS connection to one of the three servers.
	err := parallel(n, 8, func(i int) error {
		e := &edge{id: nodeID(i), at: map[uint64]time.Time{}}
		e.cond = sync.NewCond(&e.mu)
		gcfg := gateway.Config{Logger: quiet}
		rc := router.DefaultConfig()
		rc.Node, rc.Region, rc.Links = e.id, fmt.Sprintf("r%d", i%regions), upLinks{}
		gcfg.Router = router.New(rc)
		e.gw = gateway.New(gcfg)
		edges[i] = e
		sc := tablesync.DefaultConfig()
		sc.NodeID, sc.Region, sc.URLs, sc.Token = e.id, rc.Region, []string{urls[i%len(urls)]}, controltest.NATSToken
		sc.TableKeys, sc.Logger = keys, quiet
		sc.ReportInterval = 2 * time.Second // every edge reports often: the control plane's load
		sc.Resolver.Getenv = func(string) string { return "sk-scale" }
		sc.Apply = func(tab *table.Table) error {
			if err := e.gw.SetTable(tab); err != nil {
				return err
			}
			e.applied(tab.Revision)
			return nil
		}
		sc.Patch = func(tab *table.Table, ch table.Change) error {
			if err := e.gw.PatchTable(tab, ch); err != nil {
				return err
			}
			e.applied(tab.Revision)
			return nil
		}
		s, err := tablesync.New(sc)
		if err == nil {
			err = s.Start(ctx)
		}
		if err != nil {
			return fmt.Errorf("edge start: %w", err)
		}
		e.sync = s
		g, err := gossip.New(gossipConfig(e.id, rc.Region, "scale", mem, r.TimerScale), quiet)
		if err != nil {
			return fmt.Errorf("gossip start: %w", err)
		}
		e.gossip = g
		return nil
	})
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	nodes := make([]*gossip.Node, n)
	for i, e := range edges {
		nodes[i] = e.gossip
	}
	if err := joinTree(nodes); err != nil {
		r.Failed = "gossip join: " + err.Error()
		return r
	}
	// Gossip converges.
	if err := converge(ctx, 300*time.Second, pollStep(n, 500*time.Millisecond), [][]*gossip.Node{nodes}); err != nil {
		r.Failed = "gossip " + err.Error()
		return r
	}
	r.Converge = time.Since(start)
	// Every edge has the current table.
	rev, err := p.write(fsm.PutOp(route("model-0000", -n)))
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	deadline := time.Now().Add(120 * time.Second)
	for _, e := range edges {
		// In slices of 10 s, each noted with the fleet's table state.
		for {
			if _, ok := e.waitAtLeast(rev, time.Now().Add(min(time.Until(deadline), 10*time.Second))); ok || !time.Now().Before(deadline) {
				break
			}
			progress("waiting for revision %d: %s", rev, syncSpread(edges, rev))
			if path := os.Getenv("SCALE_MEMPROFILE"); path != "" {
				writeHeap(path + ".table")
			}
		}
		if _, ok := e.waitAtLeast(rev, deadline); !ok {
			st := e.sync.Status()
			r.Failed = fmt.Sprintf("edges did not all get the table within 120 s (%s at %d of %d, source %q, rejected %d %q, unverified %q)",
				e.id, st.Revision, rev, st.Source, st.RejectedRevision, st.RejectedReason, st.Unverified)
			return r
		}
	}
	progress("every edge has revision %d", rev)
	// Each router gets its gossip view as its membership.
	for _, e := range edges {
		var ms []router.Member
		for _, m := range e.gossip.Members() {
			ms = append(ms, router.Member{ID: m.ID, Region: m.Region, Addr: m.QUICAddr, Alive: m.State == gossip.StateAlive, RTT: *latency})
		}
		e.gw.Router().SetMembers(ms)
	}

	// Propagation: one route edited per change. Before each change the
	// fleet settles (every edge reports its table within about 300 ms of
	// applying it, a burst the control plane serves on these same two
	// cores) and the process collects its garbage: a real edge's heap is
	// its own few megabytes, where here a collection of every stand-in's
	// tables would stall whichever edges it caught. Neither wait is timed.
	var samples []time.Duration
	for ch := range *changes {
		if sleep(ctx, *changeGap) != nil {
			r.Failed = "deadline"
			return r
		}
		runtime.GC()
		rev, err := p.write(fsm.PutOp(route(fmt.Sprintf("model-%04d", ch%*routes), ch+1+n*100)))
		if err != nil {
			r.Failed = err.Error()
			return r
		}
		t0 := time.Now()
		deadline := t0.Add(30 * time.Second)
		for _, e := range edges {
			at, ok := e.waitAtLeast(rev, deadline)
			if !ok {
				r.Failed = "a change did not reach every edge within 30 s"
				return r
			}
			samples = append(samples, max(at.Sub(t0), 0))
		}
	}
	slices.Sort(samples)
	r.PropP50, r.PropP99 = pct(samples, .5), pct(samples, .99)

	// A placement moves: routable from every edge once its router's
	// table places the model on the new node.
	r.PlaceOn = (placeOn + 1) % n
	target := nodeID(r.PlaceOn)
	t0 := time.Now()
	if _, err := p.write(fsm.PutOp(&controlv1.Placement{Id: "p-tiny", Model: "tiny", Node: target, Desired: 1})); err != nil {
		r.Failed = err.Error()
		return r
	}
	ok := poll(ctx, 30*time.Second, 5*time.Millisecond, func() bool {
		for _, e := range edges {
			if !slices.Contains(e.gw.Router().Table().PlacedOn("tiny"), target) {
				return false
			}
		}
		return true
	})
	r.Placement, r.PlacementTimedOut = time.Since(t0), !ok

	// Steady state: gossip probes and push-pull (see cost_test.go), and
	// every edge reporting to the control plane every 2 s.
	r.Settle = settle(ctx, nodes, 150*time.Second)
	ccpu0, _, err := p.control()
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	b0, cpu0, w0 := packetBytes(nodes), cpuTime(), time.Now()
	if sleep(ctx, *window) != nil {
		r.Failed = "deadline"
		return r
	}
	secs := time.Since(w0).Seconds()
	r.EdgeCPU = 100 * (cpuTime() - cpu0).Seconds() / secs
	r.EdgeCPUPerNode = r.EdgeCPU / float64(n)
	ccpu1, crss, err := p.control()
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	r.ControlCPU = 100 * (ccpu1 - ccpu0).Seconds() / time.Since(w0).Seconds()
	r.ControlRSSMiB = float64(crss) / (1 << 20)
	// Probes are the steady-state packets: scaled timers send 1/scale of
	// them, so the shipped profile's rate is scale times the measured one.
	r.RawPacketBytes = float64(packetBytes(nodes)-b0) / float64(n) / secs
	r.PacketBytes = r.RawPacketBytes * float64(r.TimerScale)
	r.ExchangeBytes = exchangeBytes(nodes, 9)
	r.PushPullBytes = r.ExchangeBytes / pushPullInterval(n).Seconds()
	r.GossipBytes = r.PacketBytes + r.PushPullBytes
	var mst runtime.MemStats
	runtime.ReadMemStats(&mst)
	r.EdgeHeapMiB = float64(mst.HeapInuse) / (1 << 20)

	// Router decision time with the full membership, on one edge.
	rt := edges[n-1].gw.Router()
	var plan router.Plan
	const iters = 20000
	d0 := time.Now()
	for i := range iters {
		m := "tiny"
		if i%2 == 1 {
			m = "model-0001"
		}
		rt.Choose(&router.Request{Model: m}, &plan)
	}
	r.Decide = time.Since(d0) / iters

	// Failure detection: one stand-in's gossip killed without a leave.
	victim := edges[1+(n/2)%(n-1)]
	r.Bound = gossip.DetectionBound(gossipConfig("x", "", "", gossipnet.New(), r.TimerScale), n)
	t1 := time.Now()
	victim.gossip.Kill()
	ok = poll(ctx, detectTimeout(r.Bound, r.TimerScale), pollStep(n, 100*time.Millisecond), func() bool {
		for _, e := range edges {
			if e == victim {
				continue
			}
			dead := false
			for _, m := range e.gossip.Members() {
				if m.ID == victim.id {
					dead = m.State != gossip.StateAlive
				}
			}
			if !dead {
				return false
			}
		}
		return true
	})
	r.Detect, r.DetectTimedOut = time.Since(t1), !ok
	return r
}

// joinBound bounds the gossip joins of one fleet.
const joinBound = 420 * time.Second

// detectTimeout bounds the wait for a crash to be detected by all: 60 s
// on the shipped timers, 30 s per unit of timer scale beyond (the
// suspicion alone lasts SuspicionMult × log₁₀ n probe intervals: two
// minutes at 1,000 edges with timers ×10), and never past the bound.
func detectTimeout(bound time.Duration, scale int) time.Duration {
	return min(bound+20*time.Second, max(60*time.Second, time.Duration(scale)*30*time.Second))
}

// pollStep is step, longer for large fleets: every poll reads every
// stand-in's member list, n² entries.
func pollStep(n int, step time.Duration) time.Duration {
	return max(step, time.Duration(n)*time.Millisecond/2)
}

// converge waits, at most limit, until every member of each pool sees
// its whole pool alive; every 10 s it notes the first pool still
// lagging and has that pool's stragglers push and pull (antiEntropy).
func converge(ctx context.Context, limit, step time.Duration, pools [][]*gossip.Node) error {
	lagging := func() int {
		return slices.IndexFunc(pools, func(pool []*gossip.Node) bool { return !allAlive(pool, len(pool)) })
	}
	last := time.Now()
	if poll(ctx, limit, step, func() bool {
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			if k := lagging(); k >= 0 {
				progress("converging: pool %d of %d: %s", k+1, len(pools), aliveSpread(pools[k]))
			}
			for _, pool := range pools {
				antiEntropy(pool, len(pool))
			}
		}
		return lagging() < 0
	}) {
		return nil
	}
	k := max(lagging(), 0)
	return fmt.Errorf("did not converge within %v (pool %d of %d: %s)", limit, k+1, len(pools), aliveSpread(pools[k]))
}

func allAlive(nodes []*gossip.Node, n int) bool {
	for _, g := range nodes {
		if g.Stats().Alive < n {
			return false
		}
	}
	return true
}

// antiEntropy has every node that still sees fewer than n members alive
// push and pull its state with one random member. Memberlist does this on
// its own every push-pull interval, which it stretches with the pool (at
// 1,000 members 180 s, 900 s under timers ×5); a member that joined in the
// same wave as others can miss their broadcasts, which spent their
// retransmits before it was known, and would wait for it. The harness
// runs that exchange early for the stragglers of a mass join, the way a
// real edge's rejoin of its seeds would; only convergence waits on it.
func antiEntropy(nodes []*gossip.Node, n int) {
	parallel(len(nodes), 8, func(i int) error {
		if nodes[i].Stats().Alive < n {
			nodes[i].Join(nodes[rand.IntN(len(nodes))].Addr())
		}
		return nil
	})
}

// aliveSpread says how far from converged the nodes are, and what the
// node that sees fewest alive sees instead.
func aliveSpread(nodes []*gossip.Node) string {
	lo, hi := len(nodes)+1, 0
	var worst *gossip.Node
	for _, g := range nodes {
		alive := g.Stats().Alive
		if alive < lo {
			worst = g
		}
		lo, hi = min(lo, alive), max(hi, alive)
	}
	states := map[string]int{}
	for _, m := range worst.Members() {
		states[string(m.State)]++
	}
	return fmt.Sprintf("nodes see %d to %d of %d alive (the fewest: %v)", lo, hi, len(nodes), states)
}

func poll(ctx context.Context, timeout, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(step)
	}
	return cond()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errors.New("deadline")
	case <-t.C:
		return nil
	}
}
