package cluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/seal"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// ensureIdentity creates the cluster identity (ID and table-signing key)
// when the state has none: the first leader does it once, through Raft,
// so every control node holds the same key and a new leader signs with
// it. The private key is sealed with the KEK before it enters the log.
func (n *Node) ensureIdentity() {
	if cur := n.fsm.State().Identity(); cur != nil {
		n.resealIdentity(cur)
		return
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		n.logger.Error("creating the table-signing key failed", "err", err)
		return
	}
	sealed, err := n.cfg.KEK.Seal(priv.Seed(), seal.AADTableSigningKey)
	if err != nil {
		n.logger.Error("sealing the table-signing key failed", "err", err)
		return
	}
	id := &controlv1.ClusterIdentity{ClusterId: NewUUID(), Epoch: 1, PublicKey: pub, SealedPrivateKey: sealed}
	if _, err := n.Apply(fsm.TypeSetIdentity, &controlv1.SetIdentity{RequestId: NewUUID(), Identity: id}); err != nil {
		n.logger.Warn("recording the cluster identity failed; retrying", "err", err)
		return
	}
	if got := n.fsm.State().Identity(); got != nil {
		n.logger.Info("cluster identity ready", "cluster", got.GetClusterId(), "table_key", tablewire.FormatPublicKey(got.GetPublicKey()))
	}
}

// restoredIdentity is the identity a restored state carries, with an
// epoch above both the backup's and the current one so edges accept the
// restored, possibly older, table on purpose. Within one cluster the
// current keys stay (a restore brings back fleet data, not a table key
// the edges may no longer pin). A backup of another cluster brings its
// own identity back: that is disaster recovery onto fresh nodes, whose
// first leader made a throwaway identity before the restore; edges of
// the old cluster then follow the restored one again.
func restoredIdentity(cur, backup *controlv1.ClusterIdentity) (*controlv1.ClusterIdentity, error) {
	base := cur
	if base == nil || backup != nil && backup.GetClusterId() != cur.GetClusterId() {
		base = backup
	}
	if base == nil {
		return nil, nil
	}
	out := proto.Clone(base).(*controlv1.ClusterIdentity)
	out.Epoch = max(cur.GetEpoch(), backup.GetEpoch()) + 1
	return out, nil
}

// Healthy returns why this node cannot serve as a replica, or nil: a
// log entry it could not apply halts it (fsm.FSM.Halted) until it is
// rebuilt from the others.
func (n *Node) Healthy() error { return n.fsm.Halted() }

// resealIdentity re-seals key material sealed by a retired KEK (or in
// the clear, once a KEK is configured) with the current one: the second
// half of a KEK rotation, done by the leader through Raft.
func (n *Node) resealIdentity(cur *controlv1.ClusterIdentity) {
	blobs := []*[]byte{&cur.SealedPrivateKey}
	if cur.GetNextPublicKey() != nil {
		blobs = append(blobs, &cur.SealedNextPrivateKey)
	}
	id := proto.Clone(cur).(*controlv1.ClusterIdentity)
	changed := false
	for i, b := range blobs {
		if n.cfg.KEK.Current(*b) {
			continue
		}
		seed, err := n.cfg.KEK.Open(*b, seal.AADTableSigningKey)
		if err != nil {
			n.logger.Error("the table-signing key cannot be opened with this node's key-encryption key; give it the KEK that sealed it (-kek-previous-file during a rotation)", "err", err)
			return
		}
		sealed, err := n.cfg.KEK.Seal(seed, seal.AADTableSigningKey)
		if err != nil {
			n.logger.Error("re-sealing the table-signing key failed", "err", err)
			return
		}
		if i == 0 {
			id.SealedPrivateKey = sealed
		} else {
			id.SealedNextPrivateKey = sealed
		}
		changed = true
	}
	if !changed {
		return
	}
	if _, err := n.Apply(fsm.TypeSetIdentity, &controlv1.SetIdentity{RequestId: NewUUID(), Identity: id, Replace: true}); err != nil {
		n.logger.Warn("re-sealing the table-signing key failed; retrying", "err", err)
		return
	}
	n.logger.Info("table-signing key re-sealed with the current key-encryption key", "kek", n.cfg.KEK.ID())
}

// Errors of the table-key rotation.
var (
	ErrNoIdentity = errors.New("no cluster identity yet: the first leader creates it")
	ErrNoNextKey  = errors.New("no next table key staged: run `meridianctl table-key stage` first")
)

// StageTableKey creates the next table-signing key beside the current
// one (replacing a staged one), so its public key can be given to every
// edge before PromoteTableKey signs with it. It must run on the leader.
func (n *Node) StageTableKey() (*controlv1.ClusterIdentity, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	cur := n.fsm.State().Identity()
	if cur == nil {
		return nil, ErrNoIdentity
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sealed, err := n.cfg.KEK.Seal(priv.Seed(), seal.AADTableSigningKey)
	if err != nil {
		return nil, err
	}
	id := proto.Clone(cur).(*controlv1.ClusterIdentity)
	id.NextPublicKey, id.SealedNextPrivateKey = pub, sealed
	return n.replaceIdentity(id)
}

// PromoteTableKey makes the staged key the signing key; edges that do
// not pin it refuse everything from then on. It must run on the leader.
func (n *Node) PromoteTableKey() (*controlv1.ClusterIdentity, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	cur := n.fsm.State().Identity()
	if cur == nil {
		return nil, ErrNoIdentity
	}
	if cur.GetNextPublicKey() == nil {
		return nil, ErrNoNextKey
	}
	id := &controlv1.ClusterIdentity{ClusterId: cur.GetClusterId(), Epoch: cur.GetEpoch(),
		PublicKey: cur.GetNextPublicKey(), SealedPrivateKey: cur.GetSealedNextPrivateKey()}
	return n.replaceIdentity(id)
}

func (n *Node) replaceIdentity(id *controlv1.ClusterIdentity) (*controlv1.ClusterIdentity, error) {
	res, err := n.Apply(fsm.TypeSetIdentity, &controlv1.SetIdentity{RequestId: NewUUID(), Identity: id, Replace: true})
	if err != nil {
		return nil, err
	}
	if err := fsm.ResultError(res); err != nil {
		return nil, err
	}
	return n.fsm.State().Identity(), nil
}
