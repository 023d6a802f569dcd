package cluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

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
	if n.fsm.State().Identity() != nil {
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

// restoredIdentity is the identity a restored state carries: the
// backup's cluster and key when it has them (else the current ones), and
// an epoch above both the backup's and the current one, so edges accept
// the restored, possibly older, table on purpose.
func restoredIdentity(cur, backup *controlv1.ClusterIdentity) (*controlv1.ClusterIdentity, error) {
	base := backup
	if base == nil {
		base = cur
	}
	if base == nil {
		return nil, nil
	}
	if cur != nil && backup != nil && cur.GetClusterId() != backup.GetClusterId() {
		return nil, fmt.Errorf("restore: the backup belongs to cluster %s, this is cluster %s; edges would refuse its tables",
			backup.GetClusterId(), cur.GetClusterId())
	}
	out := &controlv1.ClusterIdentity{ClusterId: base.GetClusterId(), PublicKey: base.GetPublicKey(),
		SealedPrivateKey: base.GetSealedPrivateKey(), Epoch: max(cur.GetEpoch(), backup.GetEpoch()) + 1}
	return out, nil
}

// Healthy returns why this node cannot serve as a replica, or nil: a
// log entry it could not apply halts it (fsm.FSM.Halted) until it is
// rebuilt from the others.
func (n *Node) Healthy() error { return n.fsm.Halted() }
