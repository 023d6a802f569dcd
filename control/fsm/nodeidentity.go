package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// Identity command types. They are outside the 1-19 range the fleet
// commands use, so another series of commands can grow without clashing.
const (
	// TypeSetClusterCA is a SetClusterCA.
	TypeSetClusterCA Type = 20
	// TypeCreateJoinToken is a CreateJoinToken.
	TypeCreateJoinToken Type = 21
	// TypeRedeemJoinToken is a RedeemJoinToken.
	TypeRedeemJoinToken Type = 22
	// TypeRevokeNode is a RevokeNode.
	TypeRevokeNode Type = 23
)

// tokenRetentionMs is how long an expired or used token's record is kept
// (so a late second use is told "used", not "unknown") before the next
// CreateJoinToken prunes it.
const tokenRetentionMs = 24 * 3600 * 1000

// identity keys in the state tree:
//
//	"i/ca"         → *controlv1.ClusterCA
//	"i/t/<hash>"   → *controlv1.JoinToken
//	"i/n/<node>"   → *controlv1.NodeIdentity
var caKey = []byte("i/ca")

func tokenKey(hash string) []byte        { return []byte("i/t/" + hash) }
func nodeIdentityKey(node string) []byte { return []byte("i/n/" + node) }

// HashToken returns the form a join token is stored and looked up in.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(h[:])
}

// ClusterCA returns the cluster CA, if one was created.
func (s *State) ClusterCA() (*controlv1.ClusterCA, bool) {
	v, ok := s.tree.Get(caKey)
	if !ok {
		return nil, false
	}
	return v.(*controlv1.ClusterCA), true
}

// JoinToken returns a join token's record by its hash.
func (s *State) JoinToken(hash string) (*controlv1.JoinToken, bool) {
	v, ok := s.tree.Get(tokenKey(hash))
	if !ok {
		return nil, false
	}
	return v.(*controlv1.JoinToken), true
}

// NodeIdentity returns a joined node's identity record.
func (s *State) NodeIdentity(node string) (*controlv1.NodeIdentity, bool) {
	v, ok := s.tree.Get(nodeIdentityKey(node))
	if !ok {
		return nil, false
	}
	return v.(*controlv1.NodeIdentity), true
}

// NodeIdentities returns every joined node's record, revoked ones
// included, sorted by node ID.
func (s *State) NodeIdentities() []*controlv1.NodeIdentity {
	var out []*controlv1.NodeIdentity
	s.tree.Root().WalkPrefix([]byte("i/n/"), func(_ []byte, v any) bool {
		out = append(out, v.(*controlv1.NodeIdentity))
		return false
	})
	return out
}

// Revoked reports whether a node's identity was revoked.
func (s *State) Revoked(node string) bool {
	n, ok := s.NodeIdentity(node)
	return ok && n.GetRevoked()
}

func applySetClusterCA(txn txnView, m *controlv1.SetClusterCA) *controlv1.Result {
	ca := m.GetCa()
	if len(ca.GetCertDer()) == 0 || len(ca.GetSealedKey()) == 0 {
		return errResult(invalid("ca", "needs a certificate and a sealed key"))
	}
	if _, ok := txn.Get(caKey); ok {
		return errResult(&Error{Code: CodeConflict, Field: "ca", Message: "the cluster CA already exists"})
	}
	txn.Insert(caKey, proto.Clone(ca))
	return &controlv1.Result{}
}

func applyCreateJoinToken(txn txnView, m *controlv1.CreateJoinToken) *controlv1.Result {
	t := m.GetToken()
	switch {
	case !strings.HasPrefix(t.GetHash(), "sha256:") || len(t.GetHash()) != 7+64:
		return errResult(invalid("hash", "must be sha256: and 64 hex digits"))
	case t.GetUsed():
		return errResult(invalid("used", "a new token cannot be used"))
	case t.GetExpiresUnixMs() <= m.GetNowUnixMs():
		return errResult(invalid("expires", "is not in the future"))
	}
	if err := checkID("node", t.GetNode()); err != nil {
		return errResult(err)
	}
	if _, ok := txn.Get(entityKey(KindNode, t.GetNode())); !ok {
		if t.GetRegion() == "" {
			return errResult(&Error{Code: CodeReference, Field: "region", Message: "node " + t.GetNode() + " is not in the fleet: give its region"})
		}
		if _, ok := txn.Get(entityKey(KindRegion, t.GetRegion())); !ok {
			return errResult(&Error{Code: CodeReference, Field: "region", Message: "references unknown region " + t.GetRegion()})
		}
	}
	if _, ok := txn.Get(tokenKey(t.GetHash())); ok {
		return errResult(&Error{Code: CodeConflict, Field: "hash", Message: "token already exists"})
	}
	// Prune long-dead tokens here, where "now" is known.
	var dead [][]byte
	txn.Root().WalkPrefix([]byte("i/t/"), func(k []byte, v any) bool {
		if v.(*controlv1.JoinToken).GetExpiresUnixMs()+tokenRetentionMs < m.GetNowUnixMs() {
			dead = append(dead, k)
		}
		return false
	})
	for _, k := range dead {
		txn.Delete(k)
	}
	txn.Insert(tokenKey(t.GetHash()), proto.Clone(t))
	return &controlv1.Result{}
}

// Join token refusals, in Result.message, so the join endpoint can say
// which one without a code of its own.
const (
	MsgTokenUnknown = "join token is unknown"
	MsgTokenUsed    = "join token was already used"
	MsgTokenExpired = "join token has expired"
)

func applyRedeemJoinToken(txn txnView, m *controlv1.RedeemJoinToken) *controlv1.Result {
	if !strings.HasPrefix(m.GetNatsKey(), "U") || len(m.GetNatsKey()) != 56 {
		return errResult(invalid("nats_key", "must be a NATS user public nkey"))
	}
	v, ok := txn.Get(tokenKey(m.GetHash()))
	if !ok {
		return errResult(&Error{Code: CodeNotFound, Field: "token", Message: MsgTokenUnknown})
	}
	t := v.(*controlv1.JoinToken)
	switch {
	case t.GetUsed():
		return errResult(&Error{Code: CodeConflict, Field: "token", Message: MsgTokenUsed})
	case t.GetExpiresUnixMs() <= m.GetNowUnixMs():
		return errResult(&Error{Code: CodeInvalid, Field: "token", Message: MsgTokenExpired})
	}
	used := proto.Clone(t).(*controlv1.JoinToken)
	used.Used = true
	txn.Insert(tokenKey(t.GetHash()), used)
	region := t.GetRegion()
	if v, ok := txn.Get(entityKey(KindNode, t.GetNode())); ok {
		region = v.(*controlv1.Node).GetRegion()
	} else {
		if _, ok := txn.Get(entityKey(KindRegion, region)); !ok {
			return errResult(&Error{Code: CodeReference, Field: "region", Message: "references unknown region " + region})
		}
		txn.Insert(entityKey(KindNode, t.GetNode()), &controlv1.Node{Id: t.GetNode(), Region: region})
	}
	// A new join replaces any earlier identity, a revoked one included:
	// the operator issued a new token on purpose.
	txn.Insert(nodeIdentityKey(t.GetNode()), &controlv1.NodeIdentity{
		Node: t.GetNode(), Region: region, NatsKey: m.GetNatsKey(), JoinedUnixMs: m.GetNowUnixMs(),
	})
	return &controlv1.Result{}
}

func applyRevokeNode(txn txnView, m *controlv1.RevokeNode) *controlv1.Result {
	if err := checkID("node", m.GetNode()); err != nil {
		return errResult(err)
	}
	var id *controlv1.NodeIdentity
	if v, ok := txn.Get(nodeIdentityKey(m.GetNode())); ok {
		id = proto.Clone(v.(*controlv1.NodeIdentity)).(*controlv1.NodeIdentity)
	} else if _, ok := txn.Get(entityKey(KindNode, m.GetNode())); ok {
		// A node with a static certificate never joined; revoking it
		// still marks it in the table so peers refuse it.
		id = &controlv1.NodeIdentity{Node: m.GetNode()}
	} else {
		return errResult(&Error{Code: CodeNotFound, Field: "node", Message: "node " + m.GetNode() + " is unknown"})
	}
	if !id.GetRevoked() {
		id.Revoked, id.RevokedUnixMs = true, m.GetNowUnixMs()
	}
	txn.Insert(nodeIdentityKey(m.GetNode()), id)
	// Tokens issued for the node and not yet used die with it: only a
	// token created after the revocation re-admits it.
	var live []*controlv1.JoinToken
	txn.Root().WalkPrefix([]byte("i/t/"), func(_ []byte, v any) bool {
		if t := v.(*controlv1.JoinToken); t.GetNode() == m.GetNode() && !t.GetUsed() {
			live = append(live, t)
		}
		return false
	})
	for _, t := range live {
		used := proto.Clone(t).(*controlv1.JoinToken)
		used.Used = true
		txn.Insert(tokenKey(t.GetHash()), used)
	}
	return &controlv1.Result{}
}

// identitySnapshot collects the identity part of a snapshot.
func (s *State) identitySnapshot() *controlv1.Identity {
	out := &controlv1.Identity{}
	if ca, ok := s.ClusterCA(); ok {
		out.Ca = ca
	}
	s.tree.Root().WalkPrefix([]byte("i/t/"), func(_ []byte, v any) bool {
		out.Tokens = append(out.Tokens, v.(*controlv1.JoinToken))
		return false
	})
	out.Nodes = s.NodeIdentities()
	return out
}

func restoreIdentity(txn txnView, id *controlv1.Identity) {
	if id.GetCa() != nil {
		txn.Insert(caKey, id.GetCa())
	}
	for _, t := range id.GetTokens() {
		txn.Insert(tokenKey(t.GetHash()), t)
	}
	for _, n := range id.GetNodes() {
		txn.Insert(nodeIdentityKey(n.GetNode()), n)
	}
}
