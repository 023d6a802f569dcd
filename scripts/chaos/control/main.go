// Command control is the control plane's process-level crash test: three
// real meridian-control processes on loopback, writers creating regions
// through random nodes with request IDs and retries, and for a bounded
// number of cycles a SIGKILL of the leader or a follower, the same node
// killed twice in a row, and a kill as a node starts a snapshot. Every
// killed node restarts from its own data dir. Every node must come back,
// every acknowledged write must be on every node exactly once, and after
// each kill the cluster must accept a write within the failover bound.
//
//	go run ./scripts/chaos/control [-quick] [-cycles 40] [-seed 7]
//
// The last line is machine-readable:
//
//	control-chaos: cycles=<n> kills=<n> restarts_failed=<n> acked=<n> lost=<n> dup=<n> failover_p50_ms=<n>
//
// It exits non-zero when any check fails.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
)

const token = "chaos-admin-token-0123456789"

// truncations counts the log suffixes nodes cleared as they rejoined:
// the path raft-wal v0.4.0 broke.
var truncations atomic.Int64

// Config bounds the run.
type Config struct {
	// Cycles is how many fault cycles run; each kills once or twice.
	Cycles int
	// Writers is how many concurrent writers run throughout.
	Writers int
	// MaxWrites bounds each writer's writes.
	MaxWrites int
	// MaxDuration bounds the whole run.
	MaxDuration time.Duration
	// FailoverBound is how soon after a kill a write must be accepted.
	FailoverBound time.Duration
	// ComeBack is how long a restarted node has to rejoin and catch up.
	ComeBack time.Duration
	// Seed makes the choice of victims repeatable; 0 picks one.
	Seed uint64
	// Bin is a built meridian-control; empty builds one.
	Bin string
}

func main() {
	cfg := Config{Cycles: 60, Writers: 4, MaxWrites: 50_000, MaxDuration: 10 * time.Minute, FailoverBound: 3 * time.Second, ComeBack: 30 * time.Second}
	quick := flag.Bool("quick", false, "the bounded form CI runs: 8 cycles")
	flag.IntVar(&cfg.Cycles, "cycles", cfg.Cycles, "fault cycles")
	flag.IntVar(&cfg.Writers, "writers", cfg.Writers, "concurrent writers")
	flag.DurationVar(&cfg.FailoverBound, "failover-bound", cfg.FailoverBound, "a write must be accepted this soon after each kill")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed for the choice of victims (0: random)")
	flag.StringVar(&cfg.Bin, "bin", "", "meridian-control binary (default: build one)")
	flag.Parse()
	if *quick {
		cfg.Cycles, cfg.MaxDuration = 8, 3*time.Minute
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()%1_000_000 + 1
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "chaos-control: %v\n", err)
		os.Exit(1)
	}
}

// proc is one meridian-control process and how to start it again.
type proc struct {
	name, id, url, dir string
	args               []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	tail     []string  // the last lines of stderr
	snapshot chan bool // told when this process starts a snapshot
}

func (p *proc) start(bin string) error {
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.exitErr, p.tail = cmd, exited, nil, nil
	p.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 40 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			if strings.Contains(line, "clearing log suffix") {
				truncations.Add(1)
			}
			if strings.Contains(line, "starting snapshot up to") {
				select {
				case p.snapshot <- true:
				default:
				}
			}
		}
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// freeAddr picks a port below the ephemeral range, where no client's
// outgoing connection can take it before the node binds it.
func freeAddr() (string, error) {
	p, err := ports.Pick()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

func newClient(timeout time.Duration, addrs ...string) *client.Client {
	c, _ := client.New(client.Config{Addrs: addrs, Token: token, RetryTimeout: timeout})
	return c
}

// tally is what the writers saw.
type tally struct {
	mu      sync.Mutex
	acked   map[string]bool
	dup     int
	unknown int
}

func (t *tally) record(id string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var apiErr *client.Error
	switch {
	case err == nil:
		t.acked[id] = true
	case errors.As(err, &apiErr) && apiErr.Code == fsm.CodeConflict:
		// Each ID is created once; a conflict means a retry with the
		// same request ID applied again instead of being recognised.
		t.dup++
		t.acked[id] = true
	default:
		t.unknown++
	}
}

func run(cfg Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxDuration)
	defer cancel()
	dir, err := os.MkdirTemp("", "chaos-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if cfg.Bin == "" {
		cfg.Bin = filepath.Join(dir, "meridian-control")
		build := exec.Command("go", "build", "-o", cfg.Bin, "./control/cmd/meridian-control")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build meridian-control: %w", err)
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 21))
	fmt.Printf("chaos-control: seed %d, %d cycles, %d writers\n", cfg.Seed, cfg.Cycles, cfg.Writers)

	procs := make([]*proc, 3)
	var peers []string
	raftAddrs := make([]string, 3)
	for i := range procs {
		ra, err := freeAddr()
		if err != nil {
			return err
		}
		ha, err := freeAddr()
		if err != nil {
			return err
		}
		raftAddrs[i] = ra
		procs[i] = &proc{name: fmt.Sprintf("c%d", i), id: cluster.NewUUID(), url: "http://" + ha, dir: filepath.Join(dir, fmt.Sprintf("c%d", i)), snapshot: make(chan bool, 1)}
		procs[i].args = []string{"-data-dir", procs[i].dir, "-node-name", procs[i].name, "-node-id", procs[i].id,
			"-raft-addr", ra, "-http-addr", ha, "-admin-tokens", token, "-log-level", "info",
			// Snapshot and compact often, so kills land around snapshots
			// and restarted nodes are sent some.
			"-raft-snapshot-threshold", "256", "-raft-snapshot-interval", "300ms", "-raft-trailing-logs", "128"}
		peers = append(peers, procs[i].id+"="+ra)
	}
	for _, p := range procs {
		p.args = append(p.args, "-peers", strings.Join(peers, ","))
		if err := p.start(cfg.Bin); err != nil {
			return err
		}
	}
	defer func() {
		for _, p := range procs {
			if p.running() {
				p.kill()
			}
		}
	}()
	urls := []string{procs[0].url, procs[1].url, procs[2].url}
	if _, err := leaderOf(ctx, procs, 30*time.Second); err != nil {
		return err
	}

	// Writers: each write goes to a random node first, with its own
	// request ID, retried by the client with that ID.
	t := &tally{acked: map[string]bool{}}
	var stopWriters atomic.Bool
	var wg sync.WaitGroup
	for w := range cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var clients []*client.Client
			for i := range urls {
				clients = append(clients, newClient(20*time.Second, urls[i], urls[(i+1)%3], urls[(i+2)%3]))
			}
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			for i := 0; i < cfg.MaxWrites && !stopWriters.Load() && ctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := clients[r.IntN(3)].Create(ctx, &controlv1.Region{Id: id, Name: id}, client.WriteOptions{RequestID: id})
				t.record(id, err)
			}
		}()
	}

	var failovers []time.Duration
	kills, restartsFailed := 0, 0
	var problems []string
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		problems = append(problems, msg)
		fmt.Println("FAIL:", msg)
	}
	probe := 0
	// killAndRestart kills p, checks the survivors accept a write within
	// the bound, restarts p and waits for it to catch up.
	killAndRestart := func(p *proc, why string) {
		wasLeader := false
		if l, err := leaderOf(ctx, procs, time.Second); err == nil && l == p {
			wasLeader = true
		}
		var surv []string
		for _, q := range procs {
			if q != p {
				surv = append(surv, q.url)
			}
		}
		c := newClient(cfg.FailoverBound+10*time.Second, surv...)
		kills++
		killed := time.Now()
		p.kill()
		probe++
		id := fmt.Sprintf("probe-%d", probe)
		_, err := c.Create(ctx, &controlv1.Region{Id: id, Name: id}, client.WriteOptions{RequestID: id})
		t.record(id, err)
		d := time.Since(killed)
		role := "follower"
		if wasLeader {
			role = "leader"
			failovers = append(failovers, d)
		}
		fmt.Printf("kill %d: %s (%s, %s): a write accepted after %d ms\n", kills, p.name, role, why, d.Milliseconds())
		if err != nil || d > cfg.FailoverBound {
			fail("after killing %s (%s) no write was accepted within %s (took %s, err %v)", p.name, role, cfg.FailoverBound, d.Round(time.Millisecond), err)
		}
		if err := p.start(cfg.Bin); err != nil {
			restartsFailed++
			fail("restart %s: %v", p.name, err)
			return
		}
		if err := cameBack(ctx, procs, p, cfg.ComeBack); err != nil {
			restartsFailed++
			fail("%s did not come back: %v\n--- its last lines:\n%s", p.name, err, p.lastLines())
		}
	}

	cycles := 0
	for cycle := 1; cycle <= cfg.Cycles && ctx.Err() == nil && restartsFailed == 0; cycle++ {
		cycles = cycle
		l, err := leaderOf(ctx, procs, 30*time.Second)
		if err != nil {
			fail("cycle %d: %v", cycle, err)
			break
		}
		var followers []*proc
		for _, p := range procs {
			if p != l {
				followers = append(followers, p)
			}
		}
		// Let some writes land between faults, at a random point.
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		switch cycle % 4 {
		case 1:
			killAndRestart(l, "leader")
		case 2:
			killAndRestart(followers[rng.IntN(2)], "follower")
		case 3:
			// The same node twice in a row, the first time as leader: it
			// rejoins, may clear a log suffix the new leader never had,
			// and must start again after that.
			killAndRestart(l, "twice, first")
			killAndRestart(l, "twice, second")
		case 0:
			// As a node starts a snapshot.
			for _, p := range procs {
				select {
				case <-p.snapshot:
				default:
				}
			}
			var victim *proc
			wait := time.NewTimer(20 * time.Second)
			select {
			case <-procs[0].snapshot:
				victim = procs[0]
			case <-procs[1].snapshot:
				victim = procs[1]
			case <-procs[2].snapshot:
				victim = procs[2]
			case <-wait.C:
			}
			wait.Stop()
			if victim == nil {
				fail("cycle %d: no node started a snapshot within 20s", cycle)
				continue
			}
			killAndRestart(victim, "during a snapshot")
		}
	}
	stopWriters.Store(true)
	wg.Wait()

	// Every node holds every acknowledged write.
	t.mu.Lock()
	acked := make([]string, 0, len(t.acked))
	for id := range t.acked {
		acked = append(acked, id)
	}
	dup, unknown := t.dup, t.unknown
	t.mu.Unlock()
	lost := 0
	if restartsFailed == 0 {
		missing, err := converge(ctx, procs, acked)
		if err != nil {
			fail("%v", err)
		}
		lost = missing
		if lost > 0 {
			fail("%d acknowledged writes are missing from a node", lost)
		}
	}
	if dup > 0 {
		fail("%d writes applied twice", dup)
	}
	var p50 time.Duration
	if len(failovers) > 0 {
		s := slices.Clone(failovers)
		slices.Sort(s)
		p50 = s[len(s)/2]
	}
	fmt.Printf("writes: %d acknowledged, %d with an unknown outcome (not counted); %d leader kills, failover p50 %d ms; %d log suffixes cleared on rejoin\n",
		len(acked), unknown, len(failovers), p50.Milliseconds(), truncations.Load())
	fmt.Printf("control-chaos: cycles=%d kills=%d restarts_failed=%d acked=%d lost=%d dup=%d failover_p50_ms=%d\n",
		cycles, kills, restartsFailed, len(acked), lost, dup, p50.Milliseconds())
	if len(problems) > 0 {
		return fmt.Errorf("%d checks failed", len(problems))
	}
	return nil
}

// leaderOf finds the process that reports itself leader.
func leaderOf(ctx context.Context, procs []*proc, timeout time.Duration) (*proc, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range procs {
			if !p.running() {
				continue
			}
			info, err := clusterInfo(ctx, p)
			if err == nil && info.Stats.State == "Leader" {
				return p, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("no leader within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func clusterInfo(ctx context.Context, p *proc) (*struct {
	LeaderID string `json:"leader_id"`
	Stats    cluster.Stats
}, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := newClient(0, p.url).Cluster(rctx)
	if err != nil {
		return nil, err
	}
	return &struct {
		LeaderID string `json:"leader_id"`
		Stats    cluster.Stats
	}{info.LeaderID, info.Stats}, nil
}

// cameBack waits until p runs, knows a leader, and has applied what the
// leader had when p restarted.
func cameBack(ctx context.Context, procs []*proc, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var want uint64
	if l, err := leaderOf(ctx, procs, timeout); err == nil && l != p {
		if info, err := clusterInfo(ctx, l); err == nil {
			want = info.Stats.AppliedIndex
		}
	}
	for {
		if !p.running() {
			p.mu.Lock()
			err := p.exitErr
			p.mu.Unlock()
			return fmt.Errorf("exited: %v", err)
		}
		info, err := clusterInfo(ctx, p)
		if err == nil && info.LeaderID != "" && info.Stats.StateIndex >= want {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return err
			}
			return fmt.Errorf("after %s: leader %q, state index %d of %d", timeout, info.LeaderID, info.Stats.StateIndex, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// converge waits until every node's local state holds every acknowledged
// write, and returns how many are still missing from some node when it
// gives up.
func converge(ctx context.Context, procs []*proc, acked []string) (int, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := map[string]bool{}
		var errs []error
		for _, p := range procs {
			have, err := regions(ctx, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
				continue
			}
			for _, id := range acked {
				if !have[id] {
					missing[id] = true
				}
			}
		}
		if len(missing) == 0 && len(errs) == 0 {
			return 0, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var sample []string
			for id := range missing {
				if sample = append(sample, id); len(sample) == 5 {
					break
				}
			}
			return len(missing), fmt.Errorf("nodes never held every acknowledged write (missing e.g. %v): %w", sample, errors.Join(errs...))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// regions lists the region IDs in a node's own state (a stale read, so
// it is that node's copy).
func regions(ctx context.Context, p *proc) (map[string]bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, _, err := newClient(0, p.url).List(rctx, "region", client.ReadOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		out[m.(*controlv1.Region).GetId()] = true
	}
	return out, nil
}
