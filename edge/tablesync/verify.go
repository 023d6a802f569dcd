package tablesync

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Heartbeat interval bounds: an interval_ms outside them is ignored (the
// edge keeps the one it had), so a heartbeat cannot make the edge spin
// on its staleness checks and reports, nor call its table fresh for
// hours.
const (
	MinHeartbeatInterval = 50 * time.Millisecond
	MaxHeartbeatInterval = 5 * time.Minute
)

// verify checks a message's signature against the pinned table keys;
// nothing is decoded before it passes.
func (s *Syncer) verify(ctx string, field protowire.Number, b []byte) error {
	if len(b) > s.cfg.MaxBytes+256 {
		return fmt.Errorf("%w: %d bytes", tablewire.ErrTooLarge, len(b))
	}
	return tablewire.Verify(s.trust.Load().keys, ctx, field, b)
}

// trust is what the edge checks control messages against: the table
// keys and the cluster ID it follows ("" for the first table's).
type trust struct {
	keys    []ed25519.PublicKey
	cluster string
}

// SetTrust replaces the table keys and the cluster ID messages are
// checked against, from any goroutine: an edge whose keys come with its
// node certificate learns a staged or promoted key at each renewal. The
// table in use stays; the next message must verify under the new keys.
func (s *Syncer) SetTrust(keys []ed25519.PublicKey, clusterID string) error {
	if len(keys) == 0 {
		return errors.New("tablesync: a table public key is required")
	}
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return errors.New("tablesync: a table public key is 32 bytes")
		}
	}
	s.trust.Store(&trust{keys: slices.Clone(keys), cluster: clusterID})
	return nil
}

// checkCluster refuses a message from another control plane: the one
// the config pins, else the one the edge's table came from.
func (s *Syncer) checkCluster(id string) error {
	want := s.trust.Load().cluster
	if want == "" && s.cur != nil {
		want = s.cur.GetClusterId()
	}
	if want != "" && id != want {
		return fmt.Errorf("message from cluster %q; this edge follows cluster %q", id, want)
	}
	return nil
}

// unverified records a message the edge refused before looking inside
// it: the table in use stays, the reason is in the status and the next
// report, and the log says it once per reason.
func (s *Syncer) unverified(kind string, err error) {
	s.m.unverified.WithLabelValues(kind).Inc()
	reason := kind + ": " + err.Error()
	if reason == s.st.Unverified {
		return
	}
	s.st.Unverified = reason
	s.log.Error("control message refused; keeping the current table", "kind", kind, "err", err)
	s.publishStatus()
	s.scheduleReport()
}

// cmpTable orders (epoch, revision) pairs: a table from a higher epoch
// (a control plane restored from backup) wins whatever its revision.
func cmpTable(epoch, rev, curEpoch, curRev uint64) int {
	switch {
	case epoch != curEpoch:
		if epoch > curEpoch {
			return 1
		}
		return -1
	case rev > curRev:
		return 1
	case rev < curRev:
		return -1
	}
	return 0
}

// ParsePublicKeys reads table public keys in config form
// ("ed25519:<base64>").
func ParsePublicKeys(ss []string) ([]ed25519.PublicKey, error) {
	out := make([]ed25519.PublicKey, 0, len(ss))
	for _, s := range ss {
		k, err := tablewire.ParsePublicKey(s)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
