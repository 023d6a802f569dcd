package cluster

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.RaftAddr = dir, "127.0.0.1:0"
	cfg.Bootstrap = true
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func waitLeader(t *testing.T, n *Node) {
	t.Helper()
	wait.For(t, 20*time.Second, "a leader", func() error { return n.ConsistentRead() })
}

func TestSingleNodeKeepsIDAndStateAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	n, err := Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	id := n.ID()
	if len(id) != 36 || strings.Count(id, "-") != 4 {
		t.Fatalf("node ID %q is not a UUID", id)
	}
	waitLeader(t, n)
	res, err := n.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "r1", Ops: []*controlv1.Op{fsm.PutOp(&controlv1.Region{Id: "eu"})}})
	if err != nil || res.GetCode() != "" {
		t.Fatalf("apply: %v %v", res, err)
	}
	raftAddr := n.RaftAddr()
	if err := n.Leave(); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(dir)
	cfg.RaftAddr = raftAddr
	n, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.ID() != id {
		t.Fatalf("ID changed across a restart: %s → %s", id, n.ID())
	}
	waitLeader(t, n)
	if _, ok := n.FSM().State().Get(fsm.KindRegion, "eu"); !ok {
		t.Fatal("restart lost the region")
	}
	// The leader records its address once it is ready, so poll.
	wait.For(t, 20*time.Second, "the leader to record its own address", func() bool {
		_, ok := n.FSM().State().Member(id)
		return ok
	})

	other := testConfig(dir)
	other.NodeID = "something-else"
	if _, err := Open(other); err == nil {
		t.Fatal("opened a data dir under a different node ID")
	}
}

func TestConfigAndPeers(t *testing.T) {
	if _, err := ParsePeer("abc=127.0.0.1:7401"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"abc", "=127.0.0.1:1", "abc=nohost"} {
		if _, err := ParsePeer(bad); err == nil {
			t.Errorf("ParsePeer(%q) accepted", bad)
		}
	}
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Error("a config without a data dir validated")
	}
	cfg.DataDir, cfg.Bootstrap, cfg.Peers = "x", true, []Peer{{ID: "a", Addr: "h:1"}}
	if err := cfg.Validate(); err == nil {
		t.Error("bootstrap with peers validated")
	}
	if errors.Is(classify(errors.New("disk full")), ErrNotLeader) {
		t.Error("an unrelated error was classed as not-leader")
	}
}
