// Command spend is make bench-spend: the exactness run of usage and
// spend (package exact) at full size on the mesh make run starts, 10,000
// requests by default, one edge SIGKILLed and restarted midway. It ends
// with one line:
//
//	spend: requests=<n> records=<n> diff_cents=<n> lost=<n> dup=<n>
//
// and exits 1 unless the control plane's totals equal the clients'.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/scripts/bench/spend/exact"
	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
)

func main() {
	n := flag.Int("requests", 10000, "requests to send in all")
	workers := flag.Int("workers", 8, "concurrent clients")
	victim := flag.String("kill", "eu-west-1", "edge to SIGKILL and restart midway (empty: none)")
	dir := flag.String("dir", ".meridian/bench-spend", "state folder, emptied first")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, *n, *workers, *victim, *dir))
}

func run(ctx context.Context, n, workers int, victim, dir string) int {
	if err := os.RemoveAll(dir); err != nil {
		fmt.Println("bench-spend:", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fmt.Println("bench-spend:", err)
		return 1
	}
	logs, err := os.Create(filepath.Join(dir, "mesh.log"))
	if err != nil {
		fmt.Println("bench-spend:", err)
		return 1
	}
	defer logs.Close()
	o := mesh.RunOptions()
	o.Dir, o.Logs, o.Events = dir, logs, logs
	o.EdgeBase, o.Base = 19080, 19400 // beside make run and make e2e
	o.ControlNodes = 3
	fmt.Printf("bench-spend: starting the mesh (3 control nodes, three edges; logs in %s)\n", logs.Name())
	m, err := mesh.Start(ctx, o)
	if err != nil {
		fmt.Println("bench-spend: the mesh did not start:", err)
		return 1
	}
	defer m.Stop()
	r, err := exact.Run(ctx, m, exact.Options{Requests: n, Workers: workers, Victim: victim, Settle: 2 * time.Minute, Log: os.Stdout})
	fmt.Printf("bench-spend: %v in %v\n", r, r.Elapsed.Round(time.Second))
	if r.FirstError != "" {
		fmt.Println("bench-spend: first client error:", r.FirstError)
	}
	if err != nil {
		fmt.Println("bench-spend:", err)
	}
	fmt.Println(r.Line())
	if err != nil || !r.Exact() {
		return 1
	}
	return 0
}
