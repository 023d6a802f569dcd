package gossip

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
)

// MetaVersion is the first byte of every encoded NodeMeta.
//
// History:
//   - 1: flags (draining, leaving), load class, table revision, models digest, then
//     length-prefixed node ID, region and QUIC address.
const MetaVersion = 1

// Flag bits. Unknown bits are ignored so a later version can add flags
// without breaking version-1 readers.
const (
	metaFlagDraining = 1 << 0
	// metaFlagLeaving is set just before a graceful Leave. memberlist's
	// leave event does not say whether a node left or died, so peers read
	// this bit from the node's last metadata instead.
	metaFlagLeaving = 1 << 1
	metaFlagsKnown  = metaFlagDraining | metaFlagLeaving
)

// metaFixedLen is version + flags + load class + revision + digest.
const metaFixedLen = 1 + 1 + 1 + 8 + 8

// NodeMeta is the coarse, slowly changing state every node carries in its
// memberlist metadata (limited to memberlist.MetaMaxSize bytes). Richer
// state travels as broadcasts and through push-pull.
type NodeMeta struct {
	// NodeID is the node's stable identifier.
	NodeID string
	// Region is the node's region.
	Region string
	// QUICAddr is the host:port of the node's link listener.
	QUICAddr string
	// TableRevision is the revision of the routing table the node applied.
	TableRevision uint64
	// LoadClass is a coarse load level, 0 (idle) to 255 (saturated).
	LoadClass uint8
	// ModelsDigest is ModelsDigest of the node's ready models.
	ModelsDigest uint64
	// Draining is set while the node is shutting down or being drained.
	Draining bool
	// Leaving is set by Close just before the node leaves the mesh.
	Leaving bool
}

// emptyDigest is ModelsDigest of no models.
var emptyDigest = ModelsDigest(nil)

// ModelsDigest is the FNV-64a hash of the sorted, NUL-separated model
// names. It lets a peer tell that its copy of a node's ready-model list is
// stale without carrying the list in NodeMeta.
func ModelsDigest(models []string) uint64 {
	sorted := slices.Clone(models)
	slices.Sort(sorted)
	h := fnv.New64a()
	for _, m := range sorted {
		h.Write([]byte(m))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// Encode returns the version-1 binary form of m. It fails, wrapping
// ErrMetaTooLarge, if a field exceeds its limit.
func (m NodeMeta) Encode() ([]byte, error) {
	if len(m.NodeID) > MaxNodeIDLen || len(m.Region) > MaxRegionLen || len(m.QUICAddr) > MaxQUICAddrLen {
		return nil, fmt.Errorf("%w: node ID %d, region %d, QUIC address %d bytes",
			ErrMetaTooLarge, len(m.NodeID), len(m.Region), len(m.QUICAddr))
	}
	b := make([]byte, 0, metaFixedLen+3+len(m.NodeID)+len(m.Region)+len(m.QUICAddr))
	var flags byte
	if m.Draining {
		flags |= metaFlagDraining
	}
	if m.Leaving {
		flags |= metaFlagLeaving
	}
	b = append(b, MetaVersion, flags, m.LoadClass)
	b = binary.BigEndian.AppendUint64(b, m.TableRevision)
	b = binary.BigEndian.AppendUint64(b, m.ModelsDigest)
	for _, s := range []string{m.NodeID, m.Region, m.QUICAddr} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// DecodeMeta parses b as produced by Encode. It never panics: anything
// truncated, over-long, of an unknown version or with trailing bytes is
// rejected with an error wrapping ErrBadMeta.
func DecodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) < metaFixedLen {
		return m, fmt.Errorf("%w: %d bytes, need at least %d", ErrBadMeta, len(b), metaFixedLen)
	}
	if b[0] != MetaVersion {
		return m, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	m.Draining = b[1]&metaFlagDraining != 0
	m.Leaving = b[1]&metaFlagLeaving != 0
	m.LoadClass = b[2]
	m.TableRevision = binary.BigEndian.Uint64(b[3:11])
	m.ModelsDigest = binary.BigEndian.Uint64(b[11:19])
	rest := b[metaFixedLen:]
	fields := []struct {
		dst *string
		max int
	}{{&m.NodeID, MaxNodeIDLen}, {&m.Region, MaxRegionLen}, {&m.QUICAddr, MaxQUICAddrLen}}
	for i, f := range fields {
		if len(rest) < 1 {
			return NodeMeta{}, fmt.Errorf("%w: truncated before field %d", ErrBadMeta, i)
		}
		n := int(rest[0])
		rest = rest[1:]
		if n > f.max || n > len(rest) {
			return NodeMeta{}, fmt.Errorf("%w: field %d length %d", ErrBadMeta, i, n)
		}
		*f.dst = string(rest[:n])
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return NodeMeta{}, fmt.Errorf("%w: %d trailing bytes", ErrBadMeta, len(rest))
	}
	return m, nil
}
