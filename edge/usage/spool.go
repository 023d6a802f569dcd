package usage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"google.golang.org/protobuf/proto"
)

// The spool is an append-only file of frames:
//
//	uint32 little-endian payload length | uint32 little-endian CRC-32C of
//	the payload | payload (a marshalled usagev1.Record)
//
// A frame is written whole with one write; a crash can leave a torn or
// zero-filled tail, which the reader stops at.

const (
	frameHeader = 8
	// maxFrame bounds one record; a length above it is corruption.
	maxFrame = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt says the spool holds bytes past its last whole frame.
var ErrCorrupt = errors.New("usage: corrupt spool tail")

// appendFrame appends payload's frame to b.
func appendFrame(b, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

// readFrames returns the payloads of data's whole, intact frames and the
// length of the prefix they fill. err is ErrCorrupt when bytes follow
// that prefix (a torn write or damage): everything from there on is
// unreadable and is cut off.
func readFrames(data []byte) (payloads [][]byte, valid int, err error) {
	for off := 0; ; {
		rest := data[off:]
		if len(rest) == 0 {
			return payloads, off, nil
		}
		if len(rest) < frameHeader {
			return payloads, off, fmt.Errorf("%w: %d bytes of a frame header at offset %d", ErrCorrupt, len(rest), off)
		}
		n := binary.LittleEndian.Uint32(rest)
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n == 0 || n > maxFrame {
			return payloads, off, fmt.Errorf("%w: frame length %d at offset %d", ErrCorrupt, n, off)
		}
		if uint64(len(rest)-frameHeader) < uint64(n) {
			return payloads, off, fmt.Errorf("%w: frame of %d bytes cut at offset %d", ErrCorrupt, n, off)
		}
		p := rest[frameHeader : frameHeader+int(n)]
		if crc32.Checksum(p, castagnoli) != sum {
			return payloads, off, fmt.Errorf("%w: checksum mismatch at offset %d", ErrCorrupt, off)
		}
		payloads = append(payloads, p)
		off += frameHeader + int(n)
	}
}

// spool is the file records wait in until JetStream acknowledged them.
// Only the recorder's goroutine uses it.
type spool struct {
	f    *os.File
	size int64
}

// openSpool opens (creating) the spool at path and returns the payloads
// it holds. A corrupt tail is cut off and reported in cut.
func openSpool(path string) (s *spool, payloads [][]byte, cut error, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("usage: open spool: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("usage: read spool: %w", err)
	}
	payloads, valid, cut := readFrames(data)
	if cut != nil {
		if err := f.Truncate(int64(valid)); err != nil {
			f.Close()
			return nil, nil, nil, fmt.Errorf("usage: cut spool tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, nil, fmt.Errorf("usage: sync spool: %w", err)
		}
	}
	if _, err := f.Seek(int64(valid), io.SeekStart); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("usage: seek spool: %w", err)
	}
	return &spool{f: f, size: int64(valid)}, payloads, cut, nil
}

// write appends frames (whole, from appendFrame or the journal), each
// slice in turn, and syncs them to disk once.
func (s *spool) write(frames ...[]byte) error {
	wrote := false
	for _, b := range frames {
		if len(b) == 0 {
			continue
		}
		n, err := s.f.Write(b)
		s.size += int64(n)
		if err != nil {
			return fmt.Errorf("usage: write spool: %w", err)
		}
		wrote = true
	}
	if !wrote {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("usage: sync spool: %w", err)
	}
	return nil
}

// reset empties the spool once everything in it is acknowledged.
func (s *spool) reset() error {
	if s.size == 0 {
		return nil
	}
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("usage: truncate spool: %w", err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("usage: seek spool: %w", err)
	}
	s.size = 0
	return nil
}

func (s *spool) close() error { return s.f.Close() }

// adoptJournal appends to sp, synced, the journal's payloads (held) that
// the spool's (have) lack by request ID, and returns them. A payload
// that does not decode is dropped: its frame passed its checksum, so it
// was never a record.
func adoptJournal(sp *spool, have, held [][]byte) ([][]byte, error) {
	seen := make(map[string]bool, len(have))
	for _, p := range have {
		var rec usagev1.Record
		if proto.Unmarshal(p, &rec) == nil {
			seen[rec.GetRequestId()] = true
		}
	}
	var moved [][]byte
	var frames []byte
	for _, p := range held {
		var rec usagev1.Record
		if err := proto.Unmarshal(p, &rec); err != nil || rec.GetRequestId() == "" || seen[rec.GetRequestId()] {
			continue
		}
		seen[rec.GetRequestId()] = true
		moved = append(moved, p)
		frames = appendFrame(frames, p)
	}
	if err := sp.write(frames); err != nil {
		return nil, err
	}
	return moved, nil
}
