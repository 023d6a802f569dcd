package usage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
)

// The journal closes the window between a request's end and the spool's
// next sync. Record writes each record's frame (the spool's own frame
// format) into a memory-mapped file before it returns: the bytes are
// then in the kernel's page cache, which outlives the process, so a
// SIGKILL or a crash of the edge loses nothing; only losing the machine
// itself can, until the spooler's sync a Flush later.
//
// The file holds two segments of equal size. Record appends to the
// active one; each flush the spooler swaps them, copies the sealed
// segment's frames to the spool as they are (one write and one sync for
// the batch), and zeroes it. A frame's length is written after its
// payload and checksum, so a reader stops at the first zero length, and
// a frame torn by a crash fails its checksum and ends the segment.
//
// A segment that fills before the next flush (the disk stalled) does
// not block requests: further records wait in memory only, as they did
// before the journal, and are counted (Stats.Unjournaled).
//
// After a crash, a record can be in both the journal and the spool (the
// crash fell between the spool's sync and the segment's zeroing); New
// drops such copies by request ID.

// JournalFile is the journal's name inside Config.Dir.
const JournalFile = "usage.journal"

// journal is the two-segment memory-mapped file. Its methods are called
// with the recorder's qmu held, except read and zero, which the spooler
// calls on the sealed segment alone.
type journal struct {
	f      *os.File
	mem    []byte    // the whole mapping
	seg    [2][]byte // the halves of mem
	used   [2]int
	active int
}

// openJournal maps path with two segments of segBytes each, creating or
// resizing the file as needed. It returns the payloads of the frames it
// held (both segments), which the caller must make durable before it
// calls reset.
func openJournal(path string, segBytes int) (*journal, [][]byte, error) {
	if segBytes < frameHeader+1 {
		return nil, nil, fmt.Errorf("usage: journal segment of %d bytes is too small", segBytes)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("usage: open journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("usage: stat journal: %w", err)
	}
	// What a journal of another size holds is read with plain reads
	// before the file is resized for this one.
	var old [][]byte
	if size := fi.Size(); size > 0 && size != int64(2*segBytes) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("usage: read journal: %w", err)
		}
		half := len(data) / 2
		old = append(journalFrames(data[:half]), journalFrames(data[half:])...)
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("usage: resize journal: %w", err)
		}
	}
	if err := f.Truncate(int64(2 * segBytes)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("usage: size journal: %w", err)
	}
	mem, err := mapFile(f, 2*segBytes)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("usage: map journal: %w", err)
	}
	j := &journal{f: f, mem: mem, seg: [2][]byte{mem[:segBytes:segBytes], mem[segBytes:]}}
	held := append(old, journalFrames(j.seg[0])...)
	held = append(held, journalFrames(j.seg[1])...)
	// Payloads point into the mapping: copy them before reset zeroes it.
	for i, p := range held {
		held[i] = append([]byte(nil), p...)
	}
	return j, held, nil
}

// journalFrames returns the payloads of a segment's intact frames, up to
// the first zero length (the end of what was written) or damaged frame
// (a write a crash tore).
func journalFrames(seg []byte) [][]byte {
	payloads, _, _ := readFrames(seg)
	return payloads
}

// errJournalFull says the active segment has no room for a frame.
var errJournalFull = errors.New("usage: journal segment full")

// append writes rec's frame, encoding it in place. The length goes in
// last.
func (j *journal) append(rec *usagev1.Record) error {
	seg, off := j.seg[j.active], j.used[j.active]
	at := off + frameHeader
	if at+recordBound(rec) > len(seg) {
		return errJournalFull
	}
	p := appendRecord(seg[at:at:len(seg)], rec)
	if len(p) == 0 || len(p) > maxFrame {
		clear(p)
		return fmt.Errorf("usage: record of %d bytes cannot be framed", len(p))
	}
	binary.LittleEndian.PutUint32(seg[off+4:], crc32.Checksum(p, castagnoli))
	binary.LittleEndian.PutUint32(seg[off:], uint32(len(p)))
	j.used[j.active] = at + len(p)
	return nil
}

// swap seals the active segment and makes the other one active; the
// other one must have been zeroed. It returns the sealed segment's
// index.
func (j *journal) swap() int {
	sealed := j.active
	j.active = 1 - sealed
	return sealed
}

// frames returns segment i's frames, as bytes ready for the spool.
func (j *journal) frames(i int) []byte { return j.seg[i][:j.used[i]] }

// zero empties segment i once its frames are durable elsewhere.
func (j *journal) zero(i int) {
	clear(j.seg[i][:j.used[i]])
	j.used[i] = 0
}

// reset empties both segments (after New made what they held durable).
func (j *journal) reset() {
	clear(j.mem)
	j.used = [2]int{}
}

func (j *journal) close() error {
	err := unmapFile(j.mem)
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	return err
}
