package tablewire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// A table cache file is the last good table a process holds, kept on
// disk so that it starts with it: an edge's (edge/tablesync) and a
// regional leaf keeper's (control/leaf). The file is a magic string, the
// CRC-32C of the payload (4 bytes, big endian), then the payload. The
// format is fixed: caches written by earlier releases must still load
// (testdata/*.cache are files from the writers before this one).
//
// The two kinds differ on purpose only in their magic, which says what
// the payload is, so that neither is ever read as the other.
const (
	// CacheEdgeTable starts an edge's cache: the payload is an encoded
	// RoutingTable, as Encode makes it.
	CacheEdgeTable = "MRDNTBL1"
	// CacheLeafSnapshot starts a leaf keeper's cache: the payload is the
	// signed SnapshotReply exactly as a control node sent it, so what the
	// keeper answers with is byte for byte what a control node answered.
	CacheLeafSnapshot = "MRDNLEAF"
)

// ErrBadCache means a cache file is not one WriteCache wrote with the
// same magic, or is damaged: torn, truncated, corrupt or too large. A
// missing file is not one: ReadCache returns the os error, which wraps
// fs.ErrNotExist.
var ErrBadCache = errors.New("table cache is damaged")

var cacheCRC = crc32.MakeTable(crc32.Castagnoli)

// cacheHeader returns the magic and the payload's checksum.
func cacheHeader(magic string, payload []byte) []byte {
	return binary.BigEndian.AppendUint32([]byte(magic), crc32.Checksum(payload, cacheCRC))
}

// WriteCache replaces the file at path with payload, framed with magic,
// atomically: a temporary file in the same folder, fsynced, renamed over
// the old one, and the folder fsynced, so a crash leaves the old file or
// the new one, never half of either. It creates the folder (0700) if
// needed; the file is 0600.
func WriteCache(path, magic string, payload []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	// Two writes rather than one framed copy: a payload may be megabytes.
	if _, err := f.Write(cacheHeader(magic, payload)); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(payload); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadCache returns the payload of the cache file at path, framed with
// magic, after checking its header and checksum. It reads at most max
// bytes of payload: a longer file is ErrBadCache. It checks no more than
// the frame: the caller decodes and verifies the payload.
func ReadCache(path, magic string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(len(magic))+4+int64(max)+1))
	if err != nil {
		return nil, err
	}
	return ParseCache(b, magic, max)
}

// ParseCache is ReadCache on the file's bytes. The payload it returns
// points into file.
func ParseCache(file []byte, magic string, max int) ([]byte, error) {
	n := len(magic) + 4
	switch {
	case len(file) >= len(magic) && string(file[:len(magic)]) != magic:
		return nil, fmt.Errorf("%w: it starts with %q, not %q", ErrBadCache, file[:len(magic)], magic)
	case len(file) < n:
		return nil, fmt.Errorf("%w: truncated to %d bytes, inside its %d-byte header", ErrBadCache, len(file), n)
	case len(file)-n > max:
		return nil, fmt.Errorf("%w: payload over %d bytes", ErrBadCache, max)
	}
	payload := file[n:]
	if crc32.Checksum(payload, cacheCRC) != binary.BigEndian.Uint32(file[len(magic):n]) {
		return nil, fmt.Errorf("%w: checksum mismatch over %d bytes of payload (torn, truncated or corrupt)", ErrBadCache, len(payload))
	}
	return payload, nil
}
