package scale

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/table"
)

var (
	sizesFlag  = flag.String("sizes", "30,100,300,1000", "fleet sizes to measure, comma-separated")
	changes    = flag.Int("changes", 10, "route changes timed per size")
	routes     = flag.Int("routes", 100, "routes in the table")
	latency    = flag.Duration("latency", 5*time.Millisecond, "the stubbed link latency every peer is seen at")
	window     = flag.Duration("window", 6*time.Second, "steady-state window for gossip and reporting cost")
	readmePath = flag.String("readme", "", "replace the bench:scale section of this markdown file with the results")
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const regions = 5

// row is one fleet size's results.
type row struct {
	n                  int
	converge           time.Duration
	propP50, propP99   time.Duration
	placement          time.Duration
	gossipBytes        float64 // per node per second
	gossipCPU          float64 // process CPU % per node during the window
	processCPU         float64 // process CPU %, everything in it, during the window
	heapMiB            float64
	detect, bound      time.Duration
	decide             time.Duration
	patched, applied   int
	failed             string
	detectTimedOut     bool
	placementTimedOut  bool
	gossipConvergeFail bool
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

// waitAtLeast returns when the edge applied rev or later.
func (e *edge) waitAtLeast(rev uint64, deadline time.Time) (time.Time, bool) {
	t := time.AfterFunc(time.Until(deadline), func() { e.mu.Lock(); e.cond.Broadcast(); e.mu.Unlock() })
	defer t.Stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		best := time.Time{}
		for r, at := range e.at {
			if r >= rev && (best.IsZero() || at.Before(best)) {
				best = at
			}
		}
		if !best.IsZero() {
			return best, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		e.cond.Wait()
	}
}

type upLinks struct{}

func (upLinks) Down(string) bool { return false }

func TestScale(t *testing.T) {
	if os.Getenv("MERIDIAN_BENCH_SCALE") != "1" {
		t.Skip("the fleet-scale harness runs with MERIDIAN_BENCH_SCALE=1 (make bench-scale)")
	}
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			t.Fatalf("bad size %q", s)
		}
		sizes = append(sizes, n)
	}
	maxN := slices.Max(sizes)
	// Raft timers 10× the tests' tightened ones (2 s heartbeat timeout):
	// a thousand stand-ins on two cores starve the control nodes of CPU
	// for longer than the test timers allow.
	c := controltest.Start(t, 3, controltest.Options{Distribution: true, ClusterNATS: true, Timers: 10})
	c.WaitConverged()
	key := c.TableKeys()
	leader := c.Leader()
	seq := 0
	write := func(ops ...*controlv1.Op) uint64 {
		t.Helper()
		seq++
		for attempt := 0; ; attempt++ {
			res, err := c.Leader().Node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: fmt.Sprintf("scale-%d", seq), Ops: ops})
			if err == nil && res.GetCode() == "" {
				return res.GetIndex()
			}
			if attempt > 20 {
				t.Fatalf("write: %v %v", err, res.GetMessage())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	_ = leader
	// The fleet: regions, every node a stand-in may be, a provider, the
	// routes, and one local model placed on one node.
	ops := []*controlv1.Op{fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_SCALE"})}
	for r := range regions {
		ops = append(ops, fsm.PutOp(&controlv1.Region{Id: fmt.Sprintf("r%d", r), Latitude: float64(10 * r), Longitude: float64(20 * r)}))
	}
	for i := range maxN {
		ops = append(ops, fsm.PutOp(&controlv1.Node{Id: nodeID(i), Region: fmt.Sprintf("r%d", i%regions)}))
	}
	for i := range *routes {
		id := fmt.Sprintf("model-%04d", i)
		ops = append(ops, fsm.PutOp(&controlv1.Model{Id: id}), fsm.PutOp(route(id, 0)))
	}
	ops = append(ops, fsm.PutOp(&controlv1.Model{Id: "tiny", Local: true, Ollama: "tiny"}),
		fsm.PutOp(&controlv1.Route{Model: "tiny", Targets: []*controlv1.Target{{Provider: "oai"}}}),
		fsm.PutOp(&controlv1.Placement{Id: "p-tiny", Model: "tiny", Node: nodeID(0), Desired: 1}))
	write(ops...)

	var urls []string
	for _, m := range c.Members {
		urls = append(urls, m.NATSURL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	var rows []row
	placeOn := 0
	for _, n := range sizes {
		r := measure(ctx, t, n, urls, key, write, &placeOn)
		rows = append(rows, r)
		t.Logf("n=%d: %+v", n, r)
		if r.failed != "" {
			break
		}
	}
	text := report(rows)
	fmt.Print(text)
	if *readmePath != "" {
		if err := readme.Replace(*readmePath, "scale", "\n"+text); err != nil {
			fmt.Fprintln(os.Stderr, "scale:", err)
		}
	}
	fmt.Println(summary(rows))
}

func nodeID(i int) string { return fmt.Sprintf("edge-%04d", i) }

func route(model string, v int) *controlv1.Route {
	return &controlv1.Route{Model: model, Targets: []*controlv1.Target{{Provider: "oai", Model: fmt.Sprintf("%s-v%d", model, v)}}}
}

func measure(ctx context.Context, t *testing.T, n int, urls []string, keys []ed25519.PublicKey, write func(...*controlv1.Op) uint64, placeOn *int) (r row) {
	r.n = n
	edges := make([]*edge, 0, n)
	defer func() {
		var wg sync.WaitGroup
		for _, e := range edges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.sync.Close()
				e.gw.Close()
				if e.gossip != nil {
					e.gossip.Kill()
				}
			}()
		}
		wg.Wait()
	}()
	start := time.Now()
	for i := range n {
		e := &edge{id: nodeID(i), at: map[uint64]time.Time{}}
		e.cond = sync.NewCond(&e.mu)
		gcfg := gateway.Config{Logger: quiet}
		rc := router.DefaultConfig()
		rc.Node, rc.Region, rc.Links = e.id, fmt.Sprintf("r%d", i%regions), upLinks{}
		gcfg.Router = router.New(rc)
		e.gw = gateway.New(gcfg)
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
			r.failed = "edge start: " + err.Error()
			return r
		}
		e.sync = s
		g := gossip.DefaultConfig()
		g.NodeID, g.Region, g.QUICAddr, g.Label = e.id, rc.Region, "127.0.0.1:4433", "scale"
		g.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
		g.BindAddr, g.BindPort, g.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
		if i > 0 {
			g.Seeds = []string{edges[0].gossip.Addr()}
		}
		if e.gossip, err = gossip.New(g, quiet); err != nil {
			r.failed = "gossip start: " + err.Error()
			return r
		}
		edges = append(edges, e)
		if i > 0 {
			if _, err := e.gossip.Join(); err != nil {
				r.failed = "gossip join: " + err.Error()
				return r
			}
		}
	}
	// Every edge has the current table.
	rev := write(fsm.PutOp(route("model-0000", -n)))
	deadline := time.Now().Add(120 * time.Second)
	for _, e := range edges {
		if _, ok := e.waitAtLeast(rev, deadline); !ok {
			st := e.sync.Status()
			r.failed = fmt.Sprintf("edges did not all get the table within 120 s (%s at %d of %d, source %q, rejected %d %q, unverified %q)",
				e.id, st.Revision, rev, st.Source, st.RejectedRevision, st.RejectedReason, st.Unverified)
			return r
		}
	}
	// Gossip converges.
	if !poll(ctx, 180*time.Second, 500*time.Millisecond, func() bool { return allAlive(edges, n) }) {
		r.gossipConvergeFail = true
		r.failed = "gossip did not converge within 180 s"
		return r
	}
	r.converge = time.Since(start)
	// Each router gets its gossip view as its membership.
	for _, e := range edges {
		var ms []router.Member
		for _, m := range e.gossip.Members() {
			ms = append(ms, router.Member{ID: m.ID, Region: m.Region, Addr: m.QUICAddr, Alive: m.State == gossip.StateAlive, RTT: *latency})
		}
		e.gw.Router().SetMembers(ms)
	}

	// Propagation: one route edited per change.
	var samples []time.Duration
	for ch := range *changes {
		rev := write(fsm.PutOp(route(fmt.Sprintf("model-%04d", ch%*routes), ch+1+n*100)))
		t0 := time.Now()
		deadline := t0.Add(30 * time.Second)
		for _, e := range edges {
			at, ok := e.waitAtLeast(rev, deadline)
			if !ok {
				r.failed = "a change did not reach every edge within 30 s"
				return r
			}
			samples = append(samples, max(at.Sub(t0), 0))
		}
	}
	slices.Sort(samples)
	r.propP50, r.propP99 = pct(samples, .5), pct(samples, .99)

	// A placement moves: routable from every edge once its router's
	// table places the model on the new node.
	*placeOn = (*placeOn + 1) % n
	target := nodeID(*placeOn)
	t0 := time.Now()
	write(fsm.PutOp(&controlv1.Placement{Id: "p-tiny", Model: "tiny", Node: target, Desired: 1}))
	ok := poll(ctx, 30*time.Second, 5*time.Millisecond, func() bool {
		for _, e := range edges {
			if !slices.Contains(e.gw.Router().Table().PlacedOn("tiny"), target) {
				return false
			}
		}
		return true
	})
	r.placement, r.placementTimedOut = time.Since(t0), !ok

	// Steady state: gossip probes and push-pull, and every edge
	// reporting to the control plane every 2 s.
	b0, cpu0, w0 := bytesSent(edges), cpuTime(), time.Now()
	if sleep(ctx, *window) != nil {
		r.failed = "deadline"
		return r
	}
	secs := time.Since(w0).Seconds()
	r.gossipBytes = float64(bytesSent(edges)-b0) / float64(n) / secs
	r.processCPU = 100 * (cpuTime() - cpu0).Seconds() / secs
	r.gossipCPU = r.processCPU / float64(n)
	var mst runtime.MemStats
	runtime.ReadMemStats(&mst)
	r.heapMiB = float64(mst.HeapInuse) / (1 << 20)

	// Router decision time with the full membership, on one edge.
	rt := edges[n-1].gw.Router()
	var p router.Plan
	const iters = 20000
	d0 := time.Now()
	for i := range iters {
		m := "tiny"
		if i%2 == 1 {
			m = "model-0001"
		}
		rt.Choose(&router.Request{Model: m}, &p)
	}
	r.decide = time.Since(d0) / iters

	// Failure detection: one stand-in's gossip killed without a leave.
	victim := edges[1+(n/2)%(n-1)]
	cfg0 := gossip.DefaultConfig()
	r.bound = gossip.DetectionBound(cfg0, n)
	t1 := time.Now()
	victim.gossip.Kill()
	ok = poll(ctx, min(r.bound+20*time.Second, 60*time.Second), 100*time.Millisecond, func() bool {
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
	r.detect, r.detectTimedOut = time.Since(t1), !ok
	victim.gossip = nil
	return r
}

func allAlive(edges []*edge, n int) bool {
	for _, e := range edges {
		alive := 0
		for _, m := range e.gossip.Members() {
			if m.State == gossip.StateAlive {
				alive++
			}
		}
		if alive < n {
			return false
		}
	}
	return true
}

func bytesSent(edges []*edge) uint64 {
	var s uint64
	for _, e := range edges {
		if e.gossip != nil {
			s += e.gossip.Stats().BytesSent
		}
	}
	return s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func report(rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Edge stand-ins in one process with a 3-node control plane (clustered NATS), %d routes, %d route changes per size, %d CPUs, `make bench-scale`:\n\n", *routes, *changes, runtime.NumCPU())
	b.WriteString("| edges | gossip converged | propagation p50 / p99 | placement routable everywhere | gossip bytes/s per node | crash detected by all (bound) | process CPU (all edges + control) | heap | router decision |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.failed != "" && r.propP99 == 0 {
			fmt.Fprintf(&b, "| %d | %s | | | | | | | |\n", r.n, r.failed)
			continue
		}
		det := fmt.Sprintf("%.1f s (%.1f s)", r.detect.Seconds(), r.bound.Seconds())
		if r.detectTimedOut {
			det = fmt.Sprintf("not within %.0f s", min(r.bound+20*time.Second, 60*time.Second).Seconds())
		}
		pl := fmt.Sprintf("%.0f ms", msf(r.placement))
		if r.placementTimedOut {
			pl = "not within 30 s"
		}
		fmt.Fprintf(&b, "| %d | %.1f s | %.1f / %.1f ms | %s | %.0f | %s | %.0f%% | %.0f MiB | %.2f µs |\n",
			r.n, r.converge.Seconds(), msf(r.propP50), msf(r.propP99), pl, r.gossipBytes, det, r.processCPU, r.heapMiB, float64(r.decide.Nanoseconds())/1000)
	}
	return b.String()
}

func summary(rows []row) string {
	last := rows[len(rows)-1]
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].propP99 > 0 {
			last = rows[i]
			break
		}
	}
	ratio := 0.0
	var small, big *row
	for i := range rows {
		if rows[i].gossipBytes > 0 && small == nil {
			small = &rows[i]
		}
		if rows[i].gossipBytes > 0 {
			big = &rows[i]
		}
	}
	if small != nil && big != nil {
		ratio = big.gossipBytes / small.gossipBytes
	}
	return fmt.Sprintf("scale: edges=%d prop_p99_ms=%.1f gossip_bytes_ratio_%d_vs_%d=%.2f control_cpu_pct=%.0f",
		last.n, msf(last.propP99), bigN(big), bigN(small), ratio, last.processCPU)
}

func bigN(r *row) int {
	if r == nil {
		return 0
	}
	return r.n
}
