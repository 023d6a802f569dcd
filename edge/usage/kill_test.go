package usage

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"google.golang.org/protobuf/proto"
)

// killChildEnv makes the test binary, started by TestSIGKILLRightAfterRecord,
// record the records the parent asks for and then wait to be killed.
const killChildEnv = "MERIDIAN_USAGE_KILL_CHILD"

// TestMain lets the test binary double as the child process that is
// killed: a SIGKILL cannot be had in-process.
func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(dir)
		return
	}
	os.Exit(m.Run())
}

// killChild records MERIDIAN_USAGE_KILL_N records with a flush interval
// of an hour, so none reaches the spool the ordinary way, says so on
// stdout and sleeps until it is killed.
func killChild(dir string) {
	n, _ := strconv.Atoi(os.Getenv("MERIDIAN_USAGE_KILL_N"))
	cfg := DefaultConfig()
	cfg.Node, cfg.Dir, cfg.Flush, cfg.Batch = "edge-kill", dir, time.Hour, 1<<20
	r, err := New(cfg)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := range n {
		r.Record(rec(fmt.Sprintf("req-%d", i)), Labels{Tenant: "none", Model: "m"})
	}
	fmt.Println("recorded")
	time.Sleep(time.Hour)
}

// TestSIGKILLRightAfterRecord kills an edge's recorder the moment
// Record returned, long before any flush: every record must be there
// when the next recorder opens the same dir.
func TestSIGKILLRightAfterRecord(t *testing.T) {
	dir := t.TempDir()
	const n = 500
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir, "MERIDIAN_USAGE_KILL_N="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "recorded" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	r := newRecorder(t, dir)
	defer r.Close()
	r.mu.Lock()
	var ids []string
	var seqs []uint64
	epochs := map[uint64]bool{}
	for _, p := range r.pending {
		ids = append(ids, p.id)
		var rec usagev1.Record
		if err := proto.Unmarshal(p.payload, &rec); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, rec.GetSeq())
		epochs[rec.GetEpoch()] = true
	}
	r.mu.Unlock()
	// One run, numbered 1..n with no gap: what the control plane's
	// deduplication relies on.
	slices.Sort(seqs)
	if len(epochs) != 1 || epochs[0] || len(seqs) != n || seqs[0] != 1 || seqs[n-1] != n {
		t.Fatalf("recovered records' runs %v and seqs %v…, want one run numbered 1..%d", epochs, seqs[:min(len(seqs), 5)], n)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) != n {
		t.Fatalf("after a SIGKILL right after Record, the next start found %d of %d records", len(ids), n)
	}
}
