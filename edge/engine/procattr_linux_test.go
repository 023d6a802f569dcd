package engine

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// childDir is set in the environment of TestEngineChild's process: the
// "edge" TestOllamaDiesWithItsEdge kills.
const childDir = "MERIDIAN_ENGINE_TEST_CHILD"

// TestOllamaDiesWithItsEdge: an edge killed by SIGKILL takes its whole
// Ollama with it, the server and the runner it started, at once rather
// than at the edge's next start.
func TestOllamaDiesWithItsEdge(t *testing.T) {
	bin := enginetest.Binary(t)
	dir := t.TempDir()
	tiny := enginetest.Model(t, dir, "tiny", tinygguf.VariantChain)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEngineChild$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), childDir+"="+dir, childDir+"_BIN="+bin, childDir+"_GGUF="+tiny)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pgids := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "pgid "); ok {
				n, _ := strconv.Atoi(v)
				pgids <- n
			}
		}
		io.Copy(io.Discard, out)
	}()
	var pgid int
	select {
	case pgid = <-pgids:
	case <-time.After(3 * time.Minute):
		t.Fatal("the child edge did not load its model within 3m")
	}
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	if n := len(GroupMembers(pgid)); n < 2 {
		t.Fatalf("ollama's group has %d processes; want the server and a runner at least", n)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	wait.For(t, 10*time.Second, "ollama's group to die with its edge", func() bool { return len(GroupMembers(pgid)) == 0 })
}

// TestEngineChild is the edge TestOllamaDiesWithItsEdge kills: it runs an
// engine with the tiny model warm, prints its process group and waits.
func TestEngineChild(t *testing.T) {
	dir := os.Getenv(childDir)
	if dir == "" {
		t.Skip("the child process of TestOllamaDiesWithItsEdge")
	}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.Binary, cfg.DataDir, cfg.NumThread = true, os.Getenv(childDir+"_BIN"), filepath.Join(dir, "ollama"), 1
	cfg.Models = []Model{{Name: "tiny", GGUF: os.Getenv(childDir + "_GGUF")}}
	e, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	wait.For(t, 2*time.Minute, "the model to load", func() bool { ok, _ := e.Ready(); return ok })
	fmt.Printf("pgid %d\n", e.processGroup())
	time.Sleep(5 * time.Minute) // until killed
}
