// Command distribution measures how fast a routing table change reaches
// the edges: the time from a control node's Apply returning to the new
// revision being applied in the gateway of each of N edge table clients
// (edge/tablesync, with the real gateway), for a table of 10 routes and
// one of 1,000.
//
//	go run ./scripts/bench/distribution [-edges 100] [-changes 30] [-procs 1] [-readme README.md] [-v]
//
// Everything runs on loopback: one control node (Raft on disk, the
// embedded NATS server, the compiler and the publisher) and the edges,
// each with its own NATS connection, in this process or spread over
// -procs child processes of it (each edge process then has its own heap,
// as in production; on two cores the figures barely differ). The baseline, measured in the
// same run, is a bare NATS publish→receive of a message the size of one
// update to the same number of subscriber connections: what the bus
// alone costs. Each change edits one route. The last line of the output
// is a machine-readable summary of the 1,000-route case.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/control/publish"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Config is the benchmark's settings.
type Config struct {
	// Edges is the number of edge table clients.
	Edges int
	// Changes is the number of table changes timed per case.
	Changes int
	// Readme, when set, is a markdown file whose bench:distribution
	// section is replaced with the results.
	Readme string
	// Verbose prints each change's slowest edge to stderr.
	Verbose bool
	// Procs is how many processes the edges run in: as in production,
	// each process has its own heap, so one process's garbage collector
	// never stands in for a hundred. 1 runs them in this process.
	Procs int
}

const token = "bench-distribution-token-0123456789"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func main() {
	cfg := Config{}
	flag.IntVar(&cfg.Edges, "edges", 100, "edge table clients")
	flag.IntVar(&cfg.Changes, "changes", 30, "table changes timed per case")
	flag.StringVar(&cfg.Readme, "readme", "", "replace the bench:distribution section of this markdown file with the results")
	flag.BoolVar(&cfg.Verbose, "v", false, "print each change's slowest edge to stderr")
	flag.IntVar(&cfg.Procs, "procs", 1, "processes the edges run in (1: all in this one)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	childNATS := flag.String("child-nats", "", "internal: run edges for a parent benchmark on this NATS URL")
	childFirst := flag.Int("child-first", 0, "internal: first edge index of a child")
	childEdges := flag.Int("child-edges", 0, "internal: edges in a child")
	childKey := flag.String("child-table-key", "", "internal: the table public key a child's edges pin")
	flag.Parse()
	if *childNATS != "" {
		if err := child(*childNATS, *childKey, *childFirst, *childEdges); err != nil {
			log.Fatal("distribution child: ", err)
		}
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal("distribution: ", err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(cfg); err != nil {
		pprof.StopCPUProfile()
		log.Fatal("distribution: ", err)
	}
}

// result is one row of the report.
type result struct {
	name     string
	routes   int
	bytes    int // full table, encoded
	p50, p99 time.Duration
}

func run(cfg Config) error {
	if cfg.Edges < 1 || cfg.Changes < 1 || cfg.Procs < 1 {
		return errors.New("-edges, -changes and -procs must be positive")
	}
	dir, err := os.MkdirTemp("", "meridian-bench-distribution-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ncfg := natsd.DefaultConfig()
	ncfg.Listen, ncfg.Token, ncfg.Logger = "127.0.0.1:0", token, quiet
	ns, err := natsd.Start(ncfg)
	if err != nil {
		return err
	}
	defer ns.Shutdown()

	base, err := baseline(ns.ClientURL(), cfg)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	results := []result{base}
	for _, routes := range []int{10, 1000} {
		r, err := measure(ns.ClientURL(), filepath.Join(dir, fmt.Sprint(routes)), routes, cfg)
		if err != nil {
			return fmt.Errorf("%d routes: %w", routes, err)
		}
		results = append(results, r)
	}
	text := report(cfg, results)
	fmt.Print(text)
	if cfg.Readme != "" {
		// The figures are printed either way; a README without the
		// section is reported, not fatal.
		if err := readme.Replace(cfg.Readme, "distribution", "\n"+text); err != nil {
			fmt.Fprintln(os.Stderr, "distribution:", err)
		}
	}
	fmt.Println(summary(cfg, results[len(results)-1]))
	return nil
}

// summary is the machine-readable last line.
func summary(cfg Config, r result) string {
	return fmt.Sprintf("distribution: edges=%d p50_ms=%.2f p99_ms=%.2f routes=%d", cfg.Edges, ms(r.p50), ms(r.p99), r.routes)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func report(cfg Config, rs []result) string {
	var b strings.Builder
	where := "all in one process"
	if cfg.Procs > 1 {
		where = fmt.Sprintf("the edges spread over %d processes", cfg.Procs)
	}
	fmt.Fprintf(&b, "Time from a change's Apply returning on the control node to the new revision applied in the gateway of each of %d edge table clients, %d changes per row, on loopback, %s, %d CPUs (`make bench-distribution`):\n\n", cfg.Edges, cfg.Changes, where, runtime.NumCPU())
	b.WriteString("| case | table size | p50 | p99 |\n|---|---|---|---|\n")
	for _, r := range rs {
		size := "—"
		if r.bytes > 0 {
			size = fmt.Sprintf("%d routes, %.1f KiB", r.routes, float64(r.bytes)/1024)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f ms | %.2f ms |\n", r.name, size, ms(r.p50), ms(r.p99))
	}
	b.WriteString("\nThe baseline row is the bus alone: a bare NATS publish→receive to the same number of subscriber connections. A change's delta carries only the edited route, and each edge patches it into the table in use (tablewire.ApplyDeltaIndexed, Converter.Patch, gateway.PatchTable): its work no longer grows with the table (`go test -bench DeltaApply ./edge/gateway`), so the 1,000-route row differs from the 10-route one by the bytes on the bus and one copy of the route list's pointers (8 KB at 1,000 routes). A hundred edges still share two cores here, and the p99 is where the shared garbage collector lands.\n")
	return b.String()
}

func percentile(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	i := int(p * float64(len(ds)-1))
	return ds[i]
}

// baseline times a bare publish→receive to cfg.Edges subscriber
// connections.
func baseline(url string, cfg Config) (result, error) {
	var (
		mu      sync.Mutex
		samples []time.Duration
		got     = make(chan struct{}, cfg.Edges)
	)
	for range cfg.Edges {
		nc, err := nats.Connect(url, nats.Token(token))
		if err != nil {
			return result{}, err
		}
		defer nc.Close()
		if _, err := nc.Subscribe("meridian.v1.bench", func(m *nats.Msg) {
			d := time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Data))))
			mu.Lock()
			samples = append(samples, d)
			mu.Unlock()
			got <- struct{}{}
		}); err != nil {
			return result{}, err
		}
		nc.Flush()
	}
	pub, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		return result{}, err
	}
	defer pub.Close()
	msg := make([]byte, 512) // about one delta
	for range cfg.Changes {
		binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
		if err := pub.Publish("meridian.v1.bench", msg); err != nil {
			return result{}, err
		}
		for range cfg.Edges {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				return result{}, errors.New("a subscriber missed a message")
			}
		}
	}
	return result{name: "baseline: bare NATS publish→receive", p50: percentile(samples, .5), p99: percentile(samples, .99)}, nil
}

func measure(url, dir string, routes int, cfg Config) (result, error) {
	ccfg := cluster.DefaultConfig()
	ccfg.DataDir, ccfg.Bootstrap, ccfg.Logger = dir, true, quiet
	ccfg.RaftAddr, ccfg.APIAddr = "127.0.0.1:0", "http://127.0.0.1:0"
	node, err := cluster.Open(ccfg)
	if err != nil {
		return result{}, err
	}
	defer node.Close()
	for deadline := time.Now().Add(20 * time.Second); !node.IsLeader() || node.ConsistentRead() != nil; {
		if time.Now().After(deadline) {
			return result{}, errors.New("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The first leader creates the table-signing key; edges pin it.
	for deadline := time.Now().Add(20 * time.Second); node.FSM().State().Identity() == nil; {
		if time.Now().After(deadline) {
			return result{}, errors.New("no table-signing key")
		}
		time.Sleep(10 * time.Millisecond)
	}
	key := tablewire.FormatPublicKey(node.FSM().State().Identity().GetPublicKey())
	pc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		return result{}, err
	}
	defer pc.Close()
	pcfg := publish.DefaultConfig()
	pcfg.Conn, pcfg.Source, pcfg.IsLeader, pcfg.NodeID, pcfg.Logger = pc, node.FSM(), node.IsLeader, node.ID(), quiet
	pub, err := publish.New(pcfg)
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pub.Run(ctx)

	seq := 0
	write := func(ops ...*controlv1.Op) (uint64, error) {
		seq++
		res, err := node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: fmt.Sprintf("bench-%d-%d", routes, seq), Ops: ops})
		if err != nil {
			return 0, err
		}
		if res.GetCode() != "" {
			return 0, fmt.Errorf("write rejected: %s", res.GetMessage())
		}
		return res.GetIndex(), nil
	}
	ops := []*controlv1.Op{fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_BENCH_KEY"})}
	for i := range routes {
		id := fmt.Sprintf("model-%04d", i)
		ops = append(ops, fsm.PutOp(&controlv1.Model{Id: id}), fsm.PutOp(route(id, 0)))
	}
	first, err := write(ops...)
	if err != nil {
		return result{}, err
	}

	f := newFleet(cfg.Edges)
	var stopEdges func()
	if cfg.Procs > 1 {
		stopEdges, err = spawnEdges(url, key, cfg.Edges, cfg.Procs, f)
	} else {
		stopEdges, err = runEdges(ctx, url, key, 0, cfg.Edges, f.record)
	}
	if err != nil {
		return result{}, err
	}
	defer stopEdges()
	for i := range cfg.Edges {
		if _, err := f.waitAtLeast(i, first, 60*time.Second); err != nil {
			return result{}, err
		}
	}
	var samples []time.Duration
	for c := range cfg.Changes {
		id := fmt.Sprintf("model-%04d", c%routes)
		rev, err := write(fsm.PutOp(route(id, c+1)))
		if err != nil {
			return result{}, err
		}
		t0 := time.Now()
		slowest := time.Duration(0)
		for i := range cfg.Edges {
			at, err := f.waitAtLeast(i, rev, 30*time.Second)
			if err != nil {
				return result{}, err
			}
			d := at.Sub(t0)
			if d < 0 {
				d = 0 // applied before Apply returned to this goroutine
			}
			samples = append(samples, d)
			slowest = max(slowest, d)
		}
		if cfg.Verbose {
			fmt.Fprintf(os.Stderr, "routes=%d change=%d revision=%d slowest=%.2fms\n", routes, c, rev, ms(slowest))
		}
	}
	size := 0
	if b, err := tablewire.Encode(pub.Table()); err == nil {
		size = len(b)
	}
	return result{name: fmt.Sprintf("table change, %d edges", cfg.Edges), routes: routes, bytes: size, p50: percentile(samples, .5), p99: percentile(samples, .99)}, nil
}

// route is model id's route; v varies the upstream name so each change
// edits it.
func route(id string, v int) *controlv1.Route {
	return &controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "oai", Model: fmt.Sprintf("%s-v%d", id, v)}}}
}
