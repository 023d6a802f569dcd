package tablesync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// The cache file is a magic string, the CRC-32C of the payload (big
// endian), then the encoded RoutingTable.
const cacheMagic = "MRDNTBL1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errBadCache means the cache file is not a table this code wrote.
var errBadCache = errors.New("table cache is damaged")

// writeCache replaces the file at path with b atomically: a temporary
// file in the same folder, fsynced, renamed over the old one, and the
// folder fsynced, so a crash leaves the old table or the new one, never
// half of either.
func writeCache(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".table-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	var hdr [len(cacheMagic) + 4]byte
	copy(hdr[:], cacheMagic)
	binary.BigEndian.PutUint32(hdr[len(cacheMagic):], crc32.Checksum(b, crcTable))
	if _, err := f.Write(hdr[:]); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
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

// readCache loads and validates the table at path.
func readCache(path string, max int) (*tablev1.RoutingTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+int64(len(cacheMagic))+5))
	if err != nil {
		return nil, err
	}
	n := len(cacheMagic) + 4
	if len(b) < n || string(b[:len(cacheMagic)]) != cacheMagic {
		return nil, fmt.Errorf("%w: no header", errBadCache)
	}
	payload := b[n:]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(b[len(cacheMagic):n]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadCache)
	}
	return tablewire.Decode(payload, max)
}
