package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// threeNodes starts three voters bootstrapped with the same peer list on
// on-disk stores and returns their configs and nodes.
func threeNodes(t *testing.T) ([]Config, []*Node) {
	t.Helper()
	var cfgs []Config
	var peers []Peer
	for i := range 3 {
		cfg := testConfig(filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i)))
		cfg.Bootstrap = false
		cfg.NodeID, cfg.NodeName, cfg.RaftAddr = NewUUID(), fmt.Sprintf("n%d", i), freeAddr(t)
		cfgs = append(cfgs, cfg)
		peers = append(peers, Peer{ID: cfg.NodeID, Addr: cfg.RaftAddr})
	}
	nodes := make([]*Node, 3)
	for i := range cfgs {
		cfgs[i].Peers = peers
		nodes[i] = openRetry(t, cfgs[i])
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	return cfgs, nodes
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return ports.Addr(t)
}

// openRetry opens a node, retrying while the kernel still holds its port.
func openRetry(t *testing.T, cfg Config) *Node {
	t.Helper()
	var n *Node
	wait.For(t, 10*time.Second, "the port to be free", func() error {
		var err error
		if n, err = Open(cfg); err != nil && !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("open %s: %v", cfg.NodeName, err)
		}
		return err
	})
	return n
}

// poll waits up to 20 s for cond.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 20*time.Second, what, cond)
}

func leaderOf(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	var l *Node
	poll(t, "a leader", func() bool {
		for _, n := range nodes {
			if n != nil && n.ConsistentRead() == nil {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

func put(t *testing.T, nodes []*Node, id string) {
	t.Helper()
	wait.For(t, 20*time.Second, "write "+id, func() error {
		res, err := leaderOf(t, nodes).Apply(fsm.TypeWrite, &controlv1.Write{RequestId: id, Ops: []*controlv1.Op{fsm.PutOp(&controlv1.Region{Id: id})}})
		if err == nil && res.GetCode() != "" {
			err = fmt.Errorf("refused: %v", res)
		}
		return err
	})
}

// appendStale writes entries after the last one in a stopped node's log,
// at a term below the cluster's: a suffix the leader never had, as a
// leader killed with unreplicated entries leaves behind.
func appendStale(t *testing.T, dataDir string, term uint64, count int) {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(filepath.Join(dataDir, "raft", "wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	defer w.Close()
	last, err := w.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := range count {
		logs = append(logs, &raft.Log{Index: last + 1 + uint64(i), Term: term, Type: raft.LogNoop, AppendedAt: time.Now()})
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

// TestFollowerReopensAfterTruncatingItsLogSuffix is the regression test
// for raft-wal v0.4.0's tail truncation, which marked the tail segment
// sealed without writing its index: the next start of that node failed
// to read its log, and raft.NewRaft panicked, on every start after.
// Twice: a follower holds a suffix the leader never had, rejoins under a
// newer term and clears that suffix, is stopped, and must open again and
// catch up.
func TestFollowerReopensAfterTruncatingItsLogSuffix(t *testing.T) {
	cfgs, nodes := threeNodes(t)
	put(t, nodes, "before")
	for round := range 2 {
		l := leaderOf(t, nodes)
		fi := 0
		for nodes[fi] == l {
			fi++
		}
		f := nodes[fi]
		term := f.raft.CurrentTerm()
		poll(t, "the follower to catch up", func() bool { return f.raft.AppliedIndex() >= l.raft.AppliedIndex() })
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		nodes[fi] = nil
		appendStale(t, cfgs[fi].DataDir, term, 20)

		// A newer term, so the leader's next entries conflict with the
		// stale suffix.
		other := 0
		for other == fi || nodes[other] == l {
			other++
		}
		// A leader that lost its lease meanwhile (a loaded machine) has
		// started a newer term already.
		if err := l.raft.LeadershipTransferToServer(raft.ServerID(nodes[other].ID()), raft.ServerAddress(nodes[other].RaftAddr())).Error(); err != nil && !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("round %d: transfer: %v", round, err)
		}
		put(t, nodes, fmt.Sprintf("while-down-%d", round))

		f = openRetry(t, cfgs[fi])
		nodes[fi] = f
		l = leaderOf(t, nodes)
		poll(t, "the follower to clear its suffix", func() bool {
			last := f.raft.LastIndex()
			if last != l.raft.LastIndex() || f.raft.AppliedIndex() < l.raft.AppliedIndex() {
				return false
			}
			var e raft.Log
			return f.wal.GetLog(last, &e) == nil && e.Term > term
		})
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		nodes[fi] = nil

		reopened, err := Open(cfgs[fi])
		if err != nil {
			t.Fatalf("round %d: a follower that cleared its log suffix does not reopen: %v", round, err)
		}
		nodes[fi] = reopened
		want := fmt.Sprintf("while-down-%d", round)
		poll(t, "the reopened follower to hold every write", func() bool {
			_, ok := reopened.FSM().State().Get(fsm.KindRegion, want)
			return ok
		})
		put(t, nodes, fmt.Sprintf("after-%d", round))
	}
}

// TestDamagedStoreIsAnErrorNotAPanic: a log that does not open, or an
// entry raft.NewRaft would panic on, is a clear error naming the data dir
// and the way back.
func TestDamagedStoreIsAnErrorNotAPanic(t *testing.T) {
	dir := t.TempDir()
	n, err := Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	addr := n.RaftAddr()
	waitLeader(t, n)
	n.Close()
	// The WAL's metadata, overwritten with junk: the log does not open.
	junk := make([]byte, 64*1024)
	for i := range junk {
		junk[i] = 0xa5
	}
	if err := os.WriteFile(filepath.Join(dir, "raft", "wal", "wal-meta.db"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir)
	cfg.RaftAddr = addr
	_, err = Open(cfg)
	checkDamaged(t, err, dir)

	// An entry that cannot be read, checked with a log store that fails
	// to read entry 3 of 5.
	snaps := raft.NewInmemSnapshotStore()
	err = checkStores(dir, badLog{raft.NewInmemStore(), 3}, raft.NewInmemStore(), snaps)
	if err != nil {
		t.Fatalf("a log with no entries failed the check: %v", err)
	}
	logs := raft.NewInmemStore()
	for i := uint64(1); i <= 5; i++ {
		logs.StoreLog(&raft.Log{Index: i, Term: 1})
	}
	err = checkStores(dir, badLog{logs, 3}, logs, snaps)
	checkDamaged(t, err, dir)
	if !strings.Contains(err.Error(), "entry 3") {
		t.Errorf("error does not name the entry: %v", err)
	}
}

func checkDamaged(t *testing.T, err error, dir string) {
	t.Helper()
	if !errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("a damaged store opened, or failed without ErrStoreDamaged: %v", err)
	}
	for _, want := range []string{dir, "move " + filepath.Join(dir, "raft") + " aside", "snapshot"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// badLog fails to read one entry.
type badLog struct {
	*raft.InmemStore
	bad uint64
}

func (b badLog) GetLog(i uint64, l *raft.Log) error {
	if i == b.bad {
		return errors.New("sealed segment has no index block")
	}
	return b.InmemStore.GetLog(i, l)
}

// TestRejoinWithEmptyRaftDir follows the way back that a damaged store's
// error gives: the node's raft folder moved aside, its node ID kept, and
// started without a bootstrap, it rejoins as the same voter and catches
// up from the leader.
func TestRejoinWithEmptyRaftDir(t *testing.T) {
	cfgs, nodes := threeNodes(t)
	for i := range 20 {
		put(t, nodes, fmt.Sprintf("r%d", i))
	}
	l := leaderOf(t, nodes)
	fi := 0
	for nodes[fi] == l {
		fi++
	}
	if err := nodes[fi].Close(); err != nil {
		t.Fatal(err)
	}
	nodes[fi] = nil
	raftDir := filepath.Join(cfgs[fi].DataDir, "raft")
	if err := os.Rename(raftDir, raftDir+".damaged"); err != nil {
		t.Fatal(err)
	}
	put(t, nodes, "while-away")
	// A snapshot on the leader: the node gets the state from the log
	// while the leader still has it, and the snapshot once the log is
	// compacted past it (raft-wal drops whole 64 MiB segments only).
	if err := leaderOf(t, nodes).Snapshot(); err != nil {
		t.Fatal(err)
	}
	cfg := cfgs[fi]
	cfg.Peers, cfg.NodeID = nil, ""
	n := openRetry(t, cfg)
	nodes[fi] = n
	if n.ID() != cfgs[fi].NodeID {
		t.Fatalf("rejoined as %s, not as %s", n.ID(), cfgs[fi].NodeID)
	}
	poll(t, "the rejoined node to hold every write", func() bool {
		_, ok := n.FSM().State().Get(fsm.KindRegion, "while-away")
		_, first := n.FSM().State().Get(fsm.KindRegion, "r0")
		return ok && first
	})
	put(t, nodes, "after")
	poll(t, "the rejoined node to follow new writes", func() bool {
		_, ok := n.FSM().State().Get(fsm.KindRegion, "after")
		return ok
	})
}
