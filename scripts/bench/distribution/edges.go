package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/shared/table"
)

// fleet records when each edge applied each revision, wherever the
// edges run.
type fleet struct {
	mu      sync.Mutex
	cond    *sync.Cond
	applied []map[uint64]time.Time
}

func newFleet(n int) *fleet {
	f := &fleet{applied: make([]map[uint64]time.Time, n)}
	for i := range f.applied {
		f.applied[i] = map[uint64]time.Time{}
	}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fleet) record(i int, rev uint64, at time.Time) {
	f.mu.Lock()
	if i >= 0 && i < len(f.applied) {
		f.applied[i][rev] = at
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// waitAtLeast returns when edge i applied rev or later.
func (f *fleet) waitAtLeast(i int, rev uint64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() })
	defer timer.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		for r, at := range f.applied[i] {
			if r >= rev {
				return at, nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("edge %d: revision %d not applied within %s", i, rev, timeout)
		}
		f.cond.Wait()
	}
}

// runEdges starts edges first..first+n-1, each a table client in front
// of a real gateway, calling rec after every applied table.
func runEdges(ctx context.Context, url, key string, first, n int, rec func(i int, rev uint64, at time.Time)) (stop func(), err error) {
	pub, err := tablewire.ParsePublicKey(key)
	if err != nil {
		return nil, err
	}
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	for i := first; i < first+n; i++ {
		gw := gateway.New(gateway.Config{Logger: quiet})
		scfg := tablesync.DefaultConfig()
		scfg.NodeID, scfg.URLs, scfg.Token = fmt.Sprintf("edge-%03d", i), []string{url}, token
		scfg.Resolver.Getenv = func(string) string { return "sk-bench" }
		scfg.Apply = func(t *table.Table) error {
			if err := gw.SetTable(t); err != nil {
				return err
			}
			rec(i, t.Revision, time.Now())
			return nil
		}
		scfg.Patch = func(t *table.Table, ch table.Change) error {
			if err := gw.PatchTable(t, ch); err != nil {
				return err
			}
			rec(i, t.Revision, time.Now())
			return nil
		}
		scfg.Logger, scfg.TableKeys = quiet, []ed25519.PublicKey{pub}
		s, err := tablesync.New(scfg)
		if err == nil {
			err = s.Start(ctx)
		}
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, s.Close, gw.Close)
	}
	return stop, nil
}

// spawnEdges runs n edges spread over procs child processes of this
// program, as edges run in production: each process with its own heap
// and scheduler. Children report "edge revision unix-nanos" lines.
func spawnEdges(url, key string, n, procs int, f *fleet) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var (
		stdins []io.Closer
		cmds   []*exec.Cmd
	)
	stop = func() {
		for _, c := range stdins {
			c.Close()
		}
		for _, c := range cmds {
			c.Wait()
		}
	}
	per := (n + procs - 1) / procs
	for first := 0; first < n; first += per {
		count := min(per, n-first)
		cmd := exec.Command(exe, "-child-nats", url, "-child-table-key", key, "-child-first", strconv.Itoa(first), "-child-edges", strconv.Itoa(count))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			stop()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, err
		}
		stdins, cmds = append(stdins, in), append(cmds, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var i int
				var rev uint64
				var ns int64
				if _, err := fmt.Sscanf(sc.Text(), "%d %d %d", &i, &rev, &ns); err == nil {
					f.record(i, rev, time.Unix(0, ns))
				}
			}
		}()
	}
	return stop, nil
}

// child runs edges for a parent until its stdin closes.
func child(url, key string, first, n int) error {
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, err := runEdges(ctx, url, key, first, n, func(i int, rev uint64, at time.Time) {
		mu.Lock()
		fmt.Fprintf(w, "%d %d %d\n", i, rev, at.UnixNano())
		w.Flush()
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer stop()
	io.Copy(io.Discard, os.Stdin)
	return nil
}
