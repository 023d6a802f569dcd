package scale

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/distribution"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
)

var (
	sizesFlag  = flag.String("sizes", "30,100,300,1000", "fleet sizes to measure, comma-separated")
	poolsFlag  = flag.String("pools", "", "fleet sizes at which to compare one global gossip pool with a pool per region plus a WAN pool, comma-separated (empty: none)")
	changes    = flag.Int("changes", 10, "route changes timed per size")
	routes     = flag.Int("routes", 100, "routes in the table")
	changeGap  = flag.Duration("change-gap", time.Second, "the pause before each timed route change")
	latency    = flag.Duration("latency", 5*time.Millisecond, "the stubbed link latency every peer is seen at")
	window     = flag.Duration("window", 10*time.Second, "steady-state window for gossip and reporting cost")
	poolWindow = flag.Duration("pool-window", 20*time.Second, "steady-state window of the gossip pools comparison")
	scaleFrom  = flag.Int("scale-from", 300, "fleet size from which the simulation multiplies the probe and push-pull timers by -scale-by")
	scaleBy    = flag.Int("scale-by", 5, "the timer multiplier from -scale-from edges (1: the shipped profile at every size)")
	readmePath = flag.String("readme", "", "replace the bench:scale section of this markdown file with the results")
	bound      = flag.Duration("bound", 12*time.Minute, "the whole run's bound; an edge process gets this less one minute")
)

var quiet = slog.New(slog.DiscardHandler)

const regions = 5

// The environment of an edge process (see runChild).
const (
	envBench  = "MERIDIAN_BENCH_SCALE"
	envChild  = "MERIDIAN_SCALE_CHILD" // "edges:<n>" or "pools:<n>:<layout>"
	envURLs   = "MERIDIAN_SCALE_URLS"
	envKeys   = "MERIDIAN_SCALE_KEYS"
	envPlace  = "MERIDIAN_SCALE_PLACE"
	rpcPrefix = "scale-rpc "
)

// Row is one fleet size's results, measured in the edge process except
// the control plane's columns.
type Row struct {
	N                 int
	Converge          time.Duration
	PropP50, PropP99  time.Duration
	Placement         time.Duration
	GossipBytes       float64 // per node per second: PacketBytes + PushPullBytes
	PacketBytes       float64 // probes and gossip, per node per second, at the shipped timers: RawPacketBytes × TimerScale
	RawPacketBytes    float64 // measured
	TimerScale        int
	ExchangeBytes     float64 // one push-pull, both directions, measured
	PushPullBytes     float64 // ExchangeBytes / memberlist's push-pull interval
	Settle            time.Duration
	EdgeCPU           float64 // edge process CPU %, all stand-ins, during the window
	EdgeCPUPerNode    float64 // EdgeCPU / N
	EdgeHeapMiB       float64
	ControlCPU        float64 // control process CPU %, during the same window
	ControlRSSMiB     float64
	Detect, Bound     time.Duration
	Decide            time.Duration
	Failed            string
	DetectTimedOut    bool
	PlacementTimedOut bool
	PlaceOn           int
}

// PoolRow is one layout's gossip cost at one size.
type PoolRow struct {
	N             int
	Layout        string // "global" or "regional"
	TimerScale    int
	Pools         string // the pools' sizes
	Converge      time.Duration
	BytesPerNode  float64 // every node's gossip bytes/s, averaged over the N edges
	PacketBytes   float64 // the probes and gossip part of BytesPerNode
	Settle        time.Duration
	BytesRegular  float64 // an edge in one pool
	BytesWAN      float64 // a designated edge: its region's pool plus the WAN pool
	CPUPerNodePct float64
	Failed        string
}

// TestScale is the parent: it runs the control plane and, per fleet size,
// one edge process (this test binary again, in child mode) whose
// table writes it performs and whose window it measures its own CPU in.
func TestScale(t *testing.T) {
	if os.Getenv(envBench) != "1" {
		t.Skip("the fleet-scale harness runs with MERIDIAN_BENCH_SCALE=1 (make bench-scale)")
	}
	if mode := os.Getenv(envChild); mode != "" {
		runChild(t, mode)
		return
	}
	sizes, err := parseSizes(*sizesFlag)
	if err != nil {
		t.Fatal(err)
	}
	poolSizes, err := parseSizes(*poolsFlag)
	if err != nil {
		t.Fatal(err)
	}
	maxN := slices.Max(append(slices.Clone(sizes), 2))
	// Raft timers 10× the tests' tightened ones (2 s heartbeat timeout):
	// the edge process competes with the control nodes for two cores. The
	// table heartbeat is the shipped one (1 s): every edge checks each
	// heartbeat's signature, and the tests' 100 ms made that ten thousand
	// ed25519 checks a second at 1,000 edges, a quarter of the edge
	// process's CPU in a profile at 300.
	c := controltest.Start(t, 3, controltest.Options{Distribution: true, ClusterNATS: true, Timers: 10,
		HeartbeatInterval: distribution.DefaultConfig().HeartbeatInterval})
	c.WaitConverged()
	seq := 0
	var writeMu sync.Mutex
	write := func(ops ...*controlv1.Op) (uint64, error) {
		writeMu.Lock()
		defer writeMu.Unlock()
		seq++
		for attempt := 0; ; attempt++ {
			res, err := c.Leader().Node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: fmt.Sprintf("scale-%d", seq), Ops: ops})
			if err == nil && res.GetCode() == "" {
				return res.GetIndex(), nil
			}
			if attempt > 20 {
				return 0, fmt.Errorf("write: %v %v", err, res.GetMessage())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
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
	if _, err := write(ops...); err != nil {
		t.Fatal(err)
	}

	var urls []string
	for _, m := range c.Members {
		urls = append(urls, m.NATSURL())
	}
	var keys []string
	for _, k := range c.TableKeys() {
		keys = append(keys, base64.StdEncoding.EncodeToString(k))
	}
	env := []string{envURLs + "=" + strings.Join(urls, ","), envKeys + "=" + strings.Join(keys, ",")}
	ctx, cancel := context.WithTimeout(context.Background(), *bound)
	defer cancel()
	var rows []Row
	var pools []PoolRow
	poolsDone := false
	runPools := func() {
		poolsDone = true
		for _, n := range poolSizes {
			for _, layout := range []string{"global", "regional"} {
				if i := slices.IndexFunc(rows, func(r Row) bool { return r.N == n && r.GossipBytes > 0 }); layout == "global" && i >= 0 {
					r := rows[i] // the fleet run at n is one global pool
					pools = append(pools, PoolRow{N: n, Layout: layout, TimerScale: r.TimerScale, Pools: strconv.Itoa(n), Converge: r.Converge,
						BytesPerNode: r.GossipBytes, PacketBytes: r.PacketBytes, BytesRegular: r.GossipBytes, CPUPerNodePct: -1})
					continue
				}
				var p PoolRow
				if err := spawn(ctx, fmt.Sprintf("pools:%d:%s", n, layout), nil, write, &p); err != nil && p.Failed == "" {
					p = PoolRow{N: n, Layout: layout, Failed: err.Error()}
				}
				pools = append(pools, p)
				t.Logf("pools n=%d %s: %+v", n, layout, p)
			}
		}
	}
	placeOn := 0
	for _, n := range sizes {
		// The pools comparison runs as soon as the fleet runs it reuses
		// are done, before any larger (and riskier) size.
		if !poolsDone && len(poolSizes) > 0 && n > slices.Max(poolSizes) {
			runPools()
		}
		var r Row
		err := spawn(ctx, fmt.Sprintf("edges:%d", n), append(env, fmt.Sprintf("%s=%d", envPlace, placeOn)), write, &r)
		if err != nil && r.Failed == "" {
			r = Row{N: n, Failed: err.Error()}
		}
		placeOn = r.PlaceOn
		rows = append(rows, r)
		t.Logf("n=%d: %+v", n, r)
		if r.Failed != "" {
			break
		}
	}
	if !poolsDone {
		runPools()
	}
	text := report(rows) + poolReport(pools)
	fmt.Print(text)
	if *readmePath != "" {
		if err := readme.Replace(*readmePath, "scale", "\n"+text); err != nil {
			fmt.Fprintln(os.Stderr, "scale:", err)
		}
	}
	fmt.Println(summary(rows))
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// spawn runs one edge process in mode and serves its requests: table
// writes, and the control plane's CPU and memory. The child's last
// request is its result, decoded into out.
func spawn(ctx context.Context, mode string, env []string, write func(...*controlv1.Op) (uint64, error), out any) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-test.run", "^TestScale$", "-test.timeout", (*bound + 2*time.Minute).String(), "-bound", bound.String(),
		"-changes", strconv.Itoa(*changes), "-routes", strconv.Itoa(*routes), "-latency", latency.String(), "-change-gap", changeGap.String(),
		"-window", window.String(), "-pool-window", poolWindow.String(),
		"-scale-from", strconv.Itoa(*scaleFrom), "-scale-by", strconv.Itoa(*scaleBy)}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(append(os.Environ(), envChild+"="+mode), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	got := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), rpcPrefix)
		if !ok {
			fmt.Fprintln(os.Stderr, "scale child:", sc.Text())
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch verb {
		case "write":
			var w controlv1.Write
			b, err := base64.StdEncoding.DecodeString(arg)
			if err == nil {
				err = proto.Unmarshal(b, &w)
			}
			var idx uint64
			if err == nil {
				idx, err = write(w.GetOps()...)
			}
			if err != nil {
				fmt.Fprintf(stdin, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
				continue
			}
			fmt.Fprintf(stdin, "ok %d\n", idx)
		case "control":
			fmt.Fprintf(stdin, "ok %d %d\n", cpuTime().Nanoseconds(), rssBytes())
		case "result":
			got = json.Unmarshal([]byte(arg), out) == nil
			stdin.Close()
		}
	}
	err = cmd.Wait()
	if !got {
		if err == nil {
			err = fmt.Errorf("%s: no result", mode)
		}
		return fmt.Errorf("%s: %w", mode, err)
	}
	return nil
}

func nodeID(i int) string { return fmt.Sprintf("edge-%04d", i) }

func route(model string, v int) *controlv1.Route {
	return &controlv1.Route{Model: model, Targets: []*controlv1.Target{{Provider: "oai", Model: fmt.Sprintf("%s-v%d", model, v)}}}
}

func decodeKeys(s string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range strings.Split(s, ",") {
		b, err := base64.StdEncoding.DecodeString(f)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("bad table key %q", f)
		}
		keys = append(keys, ed25519.PublicKey(b))
	}
	return keys, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is this process's resident set (VmRSS in /proc/self/status).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func report(rows []Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Edge stand-ins in one process (gossip on an in-memory network), a 3-node control plane with clustered NATS in another, %d routes, %d route changes per size, %d CPUs, `make bench-scale`:\n\n", *routes, *changes, runtime.NumCPU())
	b.WriteString("| edges | gossip converged | propagation p50 / p99 | placement routable everywhere | gossip bytes/s per node (probes + push-pull) | edge CPU per node | crash detected by all (bound) | control plane CPU / RSS | edge process heap | router decision |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.Failed != "" && r.PropP99 == 0 {
			fmt.Fprintf(&b, "| %d | %s | | | | | | | | |\n", r.N, r.Failed)
			continue
		}
		det := fmt.Sprintf("%.1f s (%.0f s)", r.Detect.Seconds(), r.Bound.Seconds())
		if r.DetectTimedOut {
			det = fmt.Sprintf("not within %.0f s", detectTimeout(r.Bound, r.TimerScale).Seconds())
		}
		pl := fmt.Sprintf("%.0f ms", msf(r.Placement))
		if r.PlacementTimedOut {
			pl = "not within 30 s"
		}
		edges := strconv.Itoa(r.N)
		if r.TimerScale > 1 {
			edges += fmt.Sprintf(" (timers ×%d)", r.TimerScale)
		}
		fmt.Fprintf(&b, "| %s | %.1f s | %.1f / %.1f ms | %s | %.0f (%.0f + %.0f) | %.2f%% | %s | %.0f%% / %.0f MiB | %.0f MiB | %.2f µs |\n",
			edges, r.Converge.Seconds(), msf(r.PropP50), msf(r.PropP99), pl, r.GossipBytes, r.PacketBytes, r.PushPullBytes, r.EdgeCPUPerNode, det,
			r.ControlCPU, r.ControlRSSMiB, r.EdgeHeapMiB, float64(r.Decide.Nanoseconds())/1000)
	}
	return b.String()
}

func poolReport(rows []PoolRow) string {
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nGossip pools, the edge's shipped profile for every pool (global: the fleet run above; regional: gossip only, %.0f s window):\n\n", poolWindow.Seconds())
	b.WriteString("| edges | layout | pools | converged | bytes/s per edge (probes + push-pull) | an edge in one pool | a designated edge (region + WAN) | CPU per edge |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range rows {
		if p.Failed != "" {
			fmt.Fprintf(&b, "| %d | %s | %s | | | | | |\n", p.N, p.Layout, p.Failed)
			continue
		}
		wan := "—"
		if p.BytesWAN > 0 {
			wan = fmt.Sprintf("%.0f", p.BytesWAN)
		}
		cpu := "see above"
		if p.CPUPerNodePct >= 0 {
			cpu = fmt.Sprintf("%.2f%%", p.CPUPerNodePct)
		}
		edges := strconv.Itoa(p.N)
		if p.TimerScale > 1 {
			edges += fmt.Sprintf(" (timers ×%d)", p.TimerScale)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.1f s | %.0f (%.0f + %.0f) | %.0f | %s | %s |\n",
			edges, p.Layout, p.Pools, p.Converge.Seconds(), p.BytesPerNode, p.PacketBytes, p.BytesPerNode-p.PacketBytes, p.BytesRegular, wan, cpu)
	}
	return b.String()
}

func summary(rows []Row) string {
	if len(rows) == 0 {
		return "scale: edges=0 prop_p99_ms=0 gossip_bytes_ratio_1000_vs_30=0 control_cpu_pct=0"
	}
	last := rows[len(rows)-1]
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].PropP99 > 0 {
			last = rows[i]
			break
		}
	}
	ratio := 0.0
	var small, big *Row
	for i := range rows {
		if rows[i].GossipBytes > 0 && small == nil {
			small = &rows[i]
		}
		if rows[i].GossipBytes > 0 {
			big = &rows[i]
		}
	}
	if small != nil && big != nil {
		ratio = big.GossipBytes / small.GossipBytes
	}
	return fmt.Sprintf("scale: edges=%d prop_p99_ms=%.1f gossip_bytes_ratio_%d_vs_%d=%.2f control_cpu_pct=%.0f",
		last.N, msf(last.PropP99), bigN(big), bigN(small), ratio, last.ControlCPU)
}

func bigN(r *Row) int {
	if r == nil {
		return 0
	}
	return r.N
}
