package cluster

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/seal"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// The first leader creates the identity with the key sealed by the KEK;
// a rotation stages a key and promotes it; a node restarted with a new
// KEK and the old one as previous re-seals the key with the new one.
func TestIdentitySealingAndRotation(t *testing.T) {
	dir := t.TempDir()
	kekA, _ := seal.New(bytes.Repeat([]byte{0xa}, 32))
	kekB, _ := seal.New(bytes.Repeat([]byte{0xb}, 32))
	cfg := testConfig(dir)
	cfg.KEK = kekA
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	wait.For(t, 20*time.Second, "the identity", func() bool { return n.FSM().State().Identity() != nil })
	id := n.FSM().State().Identity()
	if !seal.Sealed(id.GetSealedPrivateKey()) || !kekA.Current(id.GetSealedPrivateKey()) || id.GetEpoch() != 1 {
		t.Fatalf("identity not sealed with the KEK: %x", id.GetSealedPrivateKey()[:1])
	}
	seed, err := kekA.Open(id.GetSealedPrivateKey(), seal.AADTableSigningKey)
	if err != nil || !ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(id.GetPublicKey())) {
		t.Fatalf("sealed key does not match the public key: %v", err)
	}

	if _, err := n.PromoteTableKey(); err != ErrNoNextKey {
		t.Fatalf("promote without a staged key: %v", err)
	}
	staged, err := n.StageTableKey()
	if err != nil || staged.GetNextPublicKey() == nil || !bytes.Equal(staged.GetPublicKey(), id.GetPublicKey()) {
		t.Fatalf("stage: %v", err)
	}
	promoted, err := n.PromoteTableKey()
	if err != nil || !bytes.Equal(promoted.GetPublicKey(), staged.GetNextPublicKey()) || promoted.GetNextPublicKey() != nil ||
		promoted.GetClusterId() != id.GetClusterId() || promoted.GetEpoch() != id.GetEpoch() {
		t.Fatalf("promote: %v %v", promoted, err)
	}
	addr := n.RaftAddr()
	n.Close()

	cfg = testConfig(dir)
	cfg.RaftAddr, cfg.KEK = addr, kekB.WithPrevious(kekA)
	n, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitLeader(t, n)
	wait.For(t, 20*time.Second, "the key re-sealed with the new KEK", func() bool {
		return kekB.Current(n.FSM().State().Identity().GetSealedPrivateKey())
	})
	if got := n.FSM().State().Identity(); !bytes.Equal(got.GetPublicKey(), promoted.GetPublicKey()) {
		t.Fatal("re-sealing changed the key")
	}
	if _, err := kekB.Open(n.FSM().State().Identity().GetSealedPrivateKey(), seal.AADTableSigningKey); err != nil {
		t.Fatalf("the new KEK alone cannot open the key: %v", err)
	}
}

// A restore raises the epoch above both the backup's and the current
// one, keeps the cluster and the current key, and brings another
// cluster's identity back with its backup.
func TestRestoreRaisesEpoch(t *testing.T) {
	cur := &controlv1.ClusterIdentity{ClusterId: "c", Epoch: 3, PublicKey: []byte("k")}
	got, err := restoredIdentity(cur, &controlv1.ClusterIdentity{ClusterId: "c", Epoch: 1, PublicKey: []byte("old")})
	if err != nil || got.GetEpoch() != 4 || string(got.GetPublicKey()) != "k" {
		t.Fatalf("%v %v", got, err)
	}
	if got, _ := restoredIdentity(cur, nil); got.GetEpoch() != 4 || string(got.GetPublicKey()) != "k" {
		t.Fatalf("backup without identity: %v", got)
	}
	// Disaster recovery: fresh nodes made their own identity first; the
	// backup's cluster comes back, with its key.
	got, _ = restoredIdentity(cur, &controlv1.ClusterIdentity{ClusterId: "old", Epoch: 9, PublicKey: []byte("old-key")})
	if got.GetClusterId() != "old" || string(got.GetPublicKey()) != "old-key" || got.GetEpoch() != 10 {
		t.Fatalf("restore onto a fresh cluster: %v", got)
	}
}
