package leaf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The cache file is a magic string, the CRC-32C of the payload (big
// endian), then the signed SnapshotReply exactly as the control plane
// sent it: what the keeper answers with is byte for byte what a control
// node answered.
const cacheMagic = "MRDNLEAF"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrBadCache means the cache file is not one this package wrote, or is
// damaged.
var ErrBadCache = errors.New("leaf: table cache is damaged")

// writeCache replaces the file at path with b atomically: a temporary
// file in the same folder, fsynced, renamed over the old one, and the
// folder fsynced, so a crash leaves the old snapshot or the new one.
func writeCache(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".leaf-table-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	var hdr [len(cacheMagic) + 4]byte
	copy(hdr[:], cacheMagic)
	binary.BigEndian.PutUint32(hdr[len(cacheMagic):], crc32.Checksum(b, crcTable))
	if _, err := f.Write(append(hdr[:], b...)); err != nil {
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

// readCache returns the payload at path after checking its header and
// checksum; the caller verifies the signature.
func readCache(path string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+int64(len(cacheMagic))+5))
	if err != nil {
		return nil, err
	}
	return parseCache(b)
}

// parseCache checks a cache file's header and checksum and returns its
// payload.
func parseCache(b []byte) ([]byte, error) {
	n := len(cacheMagic) + 4
	if len(b) < n || string(b[:len(cacheMagic)]) != cacheMagic {
		return nil, fmt.Errorf("%w: no header", ErrBadCache)
	}
	payload := b[n:]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(b[len(cacheMagic):n]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadCache)
	}
	return payload, nil
}
