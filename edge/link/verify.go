package link

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meridian-mesh/meridian/shared/pki"
)

// Errors a peer's certificate is refused with.
var (
	// ErrCertExpired is a peer certificate outside its validity period.
	ErrCertExpired = errors.New("link: peer certificate expired or not yet valid")
	// ErrNotAuthorized is a node the current table does not list, or
	// lists as revoked (Config.Authorize).
	ErrNotAuthorized = errors.New("link: peer node is not authorized")
)

// codeRevoked closes a link whose peer is no longer authorized.
const codeRevoked quic.ApplicationErrorCode = 0x20

// verifyPeer runs on every handshake, full or resumed, at both ends, on
// top of the chain check against the cluster CA: the certificate must be
// a node certificate (a control-API certificate is not), name the node
// the dialler asked for, be current, and belong to a node Authorize
// accepts. A resumed session skips chain verification, so expiry is
// checked here too.
//
// want is the node dialled, or "" on the serving side, where any node
// may connect and is known by its certificate alone.
func (t *Transport) verifyPeer(cs tls.ConnectionState, want string) error {
	if err := requireALPN(cs); err != nil {
		return err
	}
	leaf := cs.PeerCertificates[0]
	id, err := pki.NodeID(leaf)
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if want != "" && want != id {
		return fmt.Errorf("link: dialled %s but its certificate names %s: %w", want, id, pki.ErrNodeMismatch)
	}
	if now := t.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return fmt.Errorf("%w: %s's certificate is valid %s to %s", ErrCertExpired, id,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if t.cfg.Authorize != nil {
		if err := t.cfg.Authorize(id, leaf); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotAuthorized, id, err)
		}
	}
	return nil
}

// Revalidate checks every open link, dialled and accepted, against the
// current Authorize and the clock, and closes those that fail: a peer
// revoked or dropped from the table, or whose certificate expired while
// the link was up. The node calls it when the table changes; the
// transport also runs it every Config.RevalidateInterval.
func (t *Transport) Revalidate() int {
	t.mu.Lock()
	var conns []*quic.Conn
	for c := range t.served {
		conns = append(conns, c)
	}
	peers := make([]*peerState, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		if p.conn != nil {
			conns = append(conns, p.conn)
		}
		p.mu.Unlock()
	}
	n := 0
	for _, c := range conns {
		cs := c.ConnectionState().TLS
		if len(cs.PeerCertificates) == 0 {
			continue
		}
		if err := t.verifyPeer(cs, ""); err != nil {
			t.log.Warn("link: closing a link whose peer is no longer authorized", "peer", peerName(cs), "err", err)
			c.CloseWithError(codeRevoked, "peer not authorized")
			n++
		}
	}
	return n
}

func (t *Transport) revalidateLoop() {
	if t.cfg.RevalidateInterval <= 0 {
		return
	}
	tk := time.NewTicker(t.cfg.RevalidateInterval)
	defer tk.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tk.C:
			t.Revalidate()
		}
	}
}
