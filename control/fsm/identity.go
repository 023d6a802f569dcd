package fsm

import (
	"crypto/ed25519"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// identityKey holds the *controlv1.ClusterIdentity in the state tree.
var identityKey = []byte("i")

// Identity returns the cluster's identity (ID, epoch, table-signing key),
// or nil before the first leader created it.
func (s *State) Identity() *controlv1.ClusterIdentity {
	v, ok := s.tree.Get(identityKey)
	if !ok {
		return nil
	}
	return v.(*controlv1.ClusterIdentity)
}

// WithIdentity returns a copy of s holding id, for a restore: the
// restoring node raises the epoch and keeps the signing key before the
// snapshot enters Raft. It is never used inside Apply.
func (s *State) WithIdentity(id *controlv1.ClusterIdentity) *State {
	c := *s
	txn := s.tree.Txn()
	txn.Insert(identityKey, proto.Clone(id))
	c.tree = txn.CommitOnly()
	return &c
}

// applySetIdentity installs the identity when the state has none. A
// second SetIdentity (two leaders raced to create one, or a retry) is
// accepted and ignored, so every replica ends with the first.
func applySetIdentity(txn txnView, m *controlv1.SetIdentity) *controlv1.Result {
	id := m.GetIdentity()
	if id.GetClusterId() == "" || len(id.GetPublicKey()) != ed25519.PublicKeySize || len(id.GetSealedPrivateKey()) == 0 {
		return errResult(invalid("identity", "needs a cluster ID, a 32-byte ed25519 public key and a sealed private key"))
	}
	if n := id.GetNextPublicKey(); n != nil && (len(n) != ed25519.PublicKeySize || len(id.GetSealedNextPrivateKey()) == 0) {
		return errResult(invalid("identity.next_public_key", "needs 32 bytes and a sealed private key"))
	}
	if cur, ok := txn.Get(identityKey); ok {
		if !m.GetReplace() {
			return &controlv1.Result{}
		}
		c := cur.(*controlv1.ClusterIdentity)
		if c.GetClusterId() != id.GetClusterId() {
			return errResult(invalid("identity.cluster_id", "a replacement keeps the cluster ID"))
		}
		id = proto.Clone(id).(*controlv1.ClusterIdentity)
		id.Epoch = max(id.GetEpoch(), c.GetEpoch())
	}
	txn.Insert(identityKey, proto.Clone(id))
	return &controlv1.Result{}
}
