// Command e2e runs Meridian's end-to-end scenarios against the real
// binaries, started exactly as `make run` starts them
// (scripts/devmesh/mesh): a control plane, three edges in three regions
// behind WAN relays, mock providers, the fleet applied with meridianctl.
// Clients are plain HTTP and the official SDKs (openai-go, and the npm
// openai and @anthropic-ai/sdk from scripts/sdktest/node).
//
// Each scenario prints one line saying what it proved, or why it failed;
// the run ends with "e2e: N passed, M failed" and exits 1 if any failed.
// The control plane has three nodes, so that its leader can be killed;
// -long holds traffic ten times longer around each kill and move.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
)

func main() {
	long := flag.Bool("long", false, "the long forms: traffic held ten times longer around each kill and move")
	nodes := flag.Int("nodes", 3, "control plane nodes: 3, or 1 (scenario 8 then skips)")
	run := flag.String("run", "", "comma-separated scenario numbers to run (default: all)")
	dir := flag.String("dir", ".meridian/e2e", "state folder, emptied first")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runAll(ctx, *long, *nodes, *run, *dir))
}

func runAll(ctx context.Context, long bool, nodes int, only, dir string) int {
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	logPath := filepath.Join(dir, "mesh.log")
	logs, err := os.Create(logPath)
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	defer logs.Close()

	o := mesh.RunOptions()
	o.Dir, o.Logs, o.Events = dir, logs, logs
	o.EdgeBase, o.Base = 18080, 17400 // beside a running make run
	o.LogLevel = "info"
	// A tenth of make run's delays keeps the run quick.
	o.Delay = map[string]time.Duration{"eu-west/us-east": 4 * time.Millisecond, "eu-west/ap-south": 7 * time.Millisecond, "us-east/ap-south": 9 * time.Millisecond}
	o.ControlNodes = nodes
	fmt.Printf("e2e: starting the mesh (%d control node(s), three edges; logs in %s)\n", o.ControlNodes, logPath)
	m, err := mesh.Start(ctx, o)
	if err != nil {
		fmt.Println("e2e: the mesh did not start:", err)
		fmt.Printf("e2e: 0 passed, 1 failed\n")
		return 1
	}
	defer m.Stop()
	fmt.Printf("e2e: mesh up in %v\n", time.Since(start).Round(100*time.Millisecond))

	x := newEnv(ctx, m, long)
	want := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	passed, failed := 0, 0
	for _, sc := range scenarios {
		if len(want) > 0 && !want[sc.id] {
			continue
		}
		if sc.needs3 && o.ControlNodes < 3 {
			fmt.Printf("skip %-3s %s: needs three control nodes\n", sc.id, sc.name)
			continue
		}
		if err := x.heal(); err != nil {
			fmt.Printf("e2e: the mesh could not be restored after the last scenario: %v\n", err)
		}
		t0 := time.Now()
		proved, err := x.run(sc)
		d := time.Since(t0).Round(100 * time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("FAIL %-3s %s (%v): %v\n", sc.id, sc.name, d, err)
			continue
		}
		passed++
		fmt.Printf("ok   %-3s %s (%v): %s\n", sc.id, sc.name, d, proved)
	}
	m.Stop()
	if orphans := mesh.OllamaProcs(m.Dir()); len(orphans) > 0 {
		failed++
		fmt.Printf("FAIL     shutdown: Ollama processes outlived the mesh: %v\n", orphans)
	}
	fmt.Printf("e2e: wall time %v\n", time.Since(start).Round(time.Second))
	fmt.Printf("e2e: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
