package usage

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func pendingIDs(r *Recorder) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.pending))
	for _, rec := range r.pending {
		ids = append(ids, rec.id)
	}
	slices.Sort(ids)
	return ids
}

func frameOf(t *testing.T, id string) []byte {
	t.Helper()
	b, err := proto.Marshal(rec(id))
	if err != nil {
		t.Fatal(err)
	}
	return appendFrame(nil, b)
}

// A record in both the spool and the journal (the edge died between the
// spool's sync and the journal's zeroing) is recovered once; a torn
// frame ends the journal's segment without losing what came before.
func TestJournalRecoveryDropsCopiesAndTornFrames(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SpoolFile), append(frameOf(t, "a"), frameOf(t, "b")...), 0o600); err != nil {
		t.Fatal(err)
	}
	const seg = 4096
	j := make([]byte, 2*seg)
	one := append(frameOf(t, "b"), frameOf(t, "c")...)
	torn := frameOf(t, "x")
	torn[len(torn)-1] ^= 0xff // the payload no longer matches its checksum
	copy(j, append(one, torn...))
	copy(j[seg:], frameOf(t, "d"))
	if err := os.WriteFile(filepath.Join(dir, JournalFile), j, 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Node, c.Dir, c.JournalBytes = "edge-a", dir, seg
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pendingIDs(r), []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("recovered %v, want %v", got, want)
	}
	r.Close()
	// The journal was emptied and the spool now holds all four, once.
	recs, err := ReadSpool(filepath.Join(dir, SpoolFile))
	if err != nil || len(recs) != 4 {
		t.Fatalf("spool after recovery: %d records, %v", len(recs), err)
	}
	r2, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if got := pendingIDs(r2); len(got) != 4 {
		t.Fatalf("second start holds %v, want the same four", got)
	}
}

// A journal of another size (the setting changed) is still read.
func TestJournalOfAnotherSizeIsRead(t *testing.T) {
	dir := t.TempDir()
	j := make([]byte, 2*8192)
	copy(j[8192:], frameOf(t, "z"))
	if err := os.WriteFile(filepath.Join(dir, JournalFile), j, 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Node, c.Dir, c.JournalBytes = "edge-a", dir, 4096
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := pendingIDs(r); !slices.Equal(got, []string{"z"}) {
		t.Fatalf("recovered %v, want [z]", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, JournalFile)); err != nil || fi.Size() != 2*4096 {
		t.Fatalf("journal not resized: %v %v", fi, err)
	}
}

// A full journal segment does not block Record: the overflow waits in
// memory, is counted, and still reaches the spool.
func TestFullJournalFallsBackToMemory(t *testing.T) {
	dir := t.TempDir()
	c := DefaultConfig()
	c.Node, c.Dir, c.JournalBytes, c.Flush, c.Batch = "edge-a", dir, 4096, time.Hour, 1<<20
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	r.Start(nil)
	const n = 300 // about 30 bytes a frame: well past 4096 bytes
	for i := range n {
		r.Record(rec(fmt.Sprintf("r%03d", i)), Labels{Tenant: "none", Model: "m"})
	}
	if s := r.Stats(); s.Unjournaled == 0 || s.Unjournaled >= n {
		t.Fatalf("unjournaled = %d of %d, want some but not all", s.Unjournaled, n)
	}
	r.Close()
	recs, err := ReadSpool(filepath.Join(dir, SpoolFile))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(recs))
	for _, rec := range recs {
		ids = append(ids, rec.GetRequestId())
	}
	slices.Sort(ids)
	if len(slices.Compact(ids)) != n {
		t.Fatalf("spool holds %d distinct records after close, want %d", len(ids), n)
	}
}
