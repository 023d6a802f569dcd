package cluster

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// certs writes a CA in dir/ca and a certificate for each node, naming
// 127.0.0.1.
func certs(t *testing.T, dir string, nodes ...string) {
	t.Helper()
	if err := pki.WriteCA(filepath.Join(dir, "ca"), "raft-test", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := pki.WriteNodeCert(filepath.Join(dir, "ca"), dir, n, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
}

func raftTLS(dir, node string) *RaftTLS {
	return &RaftTLS{CAFile: filepath.Join(dir, "ca", pki.CACertFile), CertFile: filepath.Join(dir, node+".crt"), KeyFile: filepath.Join(dir, node+".key")}
}

// Raft runs over mutual TLS: two nodes with certificates from the CA
// form a cluster and replicate; a peer without a certificate from the
// CA (plain TCP, TLS without a client certificate, or a certificate from
// another CA) cannot send AppendEntries, so a forged entry never reaches
// the log.
func TestRaftMutualTLS(t *testing.T) {
	dir := t.TempDir()
	certs(t, dir, "ctl-a", "ctl-b")
	rogueDir := filepath.Join(dir, "rogue")
	certs(t, rogueDir, "ctl-rogue")

	cfgA := testConfig(filepath.Join(dir, "a"))
	cfgA.RaftTLS = raftTLS(dir, "ctl-a")
	a, err := Open(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitLeader(t, a)
	cfgB := testConfig(filepath.Join(dir, "b"))
	cfgB.Bootstrap, cfgB.RaftTLS = false, raftTLS(dir, "ctl-b")
	b, err := Open(cfgB)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// On a loaded machine the first leader may lose its lease while the
	// new voter catches up; adding again is harmless.
	wait.For(t, 20*time.Second, "b added as a voter", func() error {
		leader := a
		if b.IsLeader() {
			leader = b
		}
		return leader.AddVoter(b.ID(), b.RaftAddr(), "b", "")
	})
	// Either node may lead once both vote; retry on the one that does.
	wait.For(t, 20*time.Second, "the write", func() error {
		leader := a
		if b.IsLeader() {
			leader = b
		}
		res, err := leader.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "r1", Ops: []*controlv1.Op{fsm.PutOp(&controlv1.Region{Id: "eu"})}})
		if err == nil && res.GetCode() != "" {
			err = fmt.Errorf("refused: %v", res)
		}
		return err
	})
	wait.For(t, 10*time.Second, "the write on both nodes, over TLS", func() error {
		_, okA := a.FSM().State().Get(fsm.KindRegion, "eu")
		_, okB := b.FSM().State().Get(fsm.KindRegion, "eu")
		if !okA || !okB {
			return fmt.Errorf("on a: %v, on b: %v", okA, okB)
		}
		return nil
	})

	before := b.Stats()
	forge := func(name string, trans *raft.NetworkTransport) {
		t.Helper()
		defer trans.Close()
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("rogue"), Addr: []byte(trans.LocalAddr())},
			Term: before.Term + 100, PrevLogEntry: before.LastIndex, PrevLogTerm: before.Term, LeaderCommitIndex: before.LastIndex + 1,
			Entries: []*raft.Log{{Index: before.LastIndex + 1, Term: before.Term + 100, Type: raft.LogCommand, Data: []byte{byte(fsm.TypeWrite), 0xff, 0xff}}}}
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries(raft.ServerID(b.ID()), raft.ServerAddress(b.RaftAddr()), req, &resp); err == nil {
			t.Errorf("%s: AppendEntries went through (success %v)", name, resp.Success)
		}
	}
	quiet := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	forge("plain TCP", plain)
	for name, tc := range map[string]*RaftTLS{
		"another CA's certificate": raftTLS(rogueDir, "ctl-rogue"),
		// Trusts the right CA but presents another CA's certificate.
		"no certificate from the CA": {CAFile: cfgA.RaftTLS.CAFile, CertFile: filepath.Join(rogueDir, "ctl-rogue.crt"), KeyFile: filepath.Join(rogueDir, "ctl-rogue.key")},
	} {
		c := testConfig(t.TempDir())
		c.RaftTLS = tc
		trans, err := openTransport(c, nil, &raft.NetworkTransportConfig{MaxPool: 1, Timeout: time.Second, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		forge(name, trans)
	}
	if b.FSM().Halted() != nil {
		t.Fatalf("a forged entry reached the follower's FSM: %v", b.FSM().Halted())
	}
	if st := b.Stats(); st.Term > before.Term+50 {
		t.Fatalf("a rogue peer moved the follower's term to %d", st.Term)
	}
}

// Plain-TCP Raft is refused off loopback unless asked for by name.
func TestRaftInsecureNeedsOptIn(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RaftAddr = "0.0.0.0:7401"
	if err := cfg.Validate(); !errors.Is(err, ErrInsecureRaft) {
		t.Fatalf("0.0.0.0 without TLS: %v", err)
	}
	cfg.RaftInsecure = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with -raft-insecure: %v", err)
	}
	cfg.RaftInsecure, cfg.RaftAddr, cfg.RaftAdvertise = false, "127.0.0.1:7401", "10.0.0.1:7401"
	if err := cfg.Validate(); !errors.Is(err, ErrInsecureRaft) {
		t.Fatalf("advertised off loopback without TLS: %v", err)
	}
}

// A corrupt entry that reaches a replica (through Raft itself) halts
// that replica's apply loudly; the process stays up and says why.
func TestCorruptEntryDoesNotCrashNode(t *testing.T) {
	n, err := Open(testConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitLeader(t, n)
	if err := n.raft.Apply([]byte{byte(fsm.TypeWrite), 0xff, 0xff, 0xff}, time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if n.FSM().Halted() == nil || n.Healthy() == nil {
		t.Fatal("the node applied past a corrupt entry without saying so")
	}
	if _, err := n.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "r", Ops: []*controlv1.Op{fsm.PutOp(&controlv1.Region{Id: "eu"})}}); err == nil {
		if _, ok := n.FSM().State().Get(fsm.KindRegion, "eu"); ok {
			t.Fatal("a halted replica applied a later write")
		}
	}
}
