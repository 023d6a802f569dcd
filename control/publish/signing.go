package publish

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meridian-mesh/meridian/control/seal"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// errNoIdentity: the leader has not created the cluster identity yet.
// Nothing is published until it has; it is not an error worth logging.
var errNoIdentity = errors.New("no table-signing key yet: the first leader creates it")

// signer is the cluster's table key, opened once per identity.
type signer struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func (s *signer) sign(ctx string, field protowire.Number, msg []byte) []byte {
	return tablewire.Sign(s.priv, ctx, field, msg)
}

// signerFor opens the identity's private key with the KEK, reusing the
// last one opened while the key does not change. Only the compile path
// calls it, on the publisher's goroutine.
func (p *Publisher) signerFor(id *controlv1.ClusterIdentity) (*signer, error) {
	if id == nil {
		return nil, errNoIdentity
	}
	if s := p.signer; s != nil && s.pub.Equal(ed25519.PublicKey(id.GetPublicKey())) {
		return s, nil
	}
	seed, err := p.cfg.KEK.Open(id.GetSealedPrivateKey(), seal.AADTableSigningKey)
	if err != nil {
		return nil, fmt.Errorf("open the table-signing key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("open the table-signing key: not an ed25519 seed")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if !pub.Equal(ed25519.PublicKey(id.GetPublicKey())) {
		return nil, errors.New("open the table-signing key: the private key does not match the cluster's public key")
	}
	p.signer = &signer{pub: pub, priv: priv}
	return p.signer, nil
}

// PublicKey returns the table public key in config form
// ("ed25519:<base64>"), or "" before the identity exists.
func PublicKey(id *controlv1.ClusterIdentity) string {
	if len(id.GetPublicKey()) != ed25519.PublicKeySize {
		return ""
	}
	return tablewire.FormatPublicKey(id.GetPublicKey())
}
