package tablewire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

func TestCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, magic := range []string{CacheEdgeTable, CacheLeafSnapshot} {
		path := filepath.Join(dir, "sub", magic+".cache")
		for _, payload := range [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{0xa5}, 1<<16)} {
			if err := WriteCache(path, magic, payload); err != nil {
				t.Fatal(err)
			}
			got, err := ReadCache(path, magic, 1<<16)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("%s: read back %d bytes (%v), want %d", magic, len(got), err, len(payload))
			}
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: file mode %v (%v), want 0600", magic, fi.Mode(), err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "sub")); len(entries) != 2 {
		t.Fatalf("temporary files left: %d entries, want the 2 caches", len(entries))
	}
}

func TestCacheMissing(t *testing.T) {
	_, err := ReadCache(filepath.Join(t.TempDir(), "none"), CacheEdgeTable, 1024)
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrBadCache) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// Every kind of damage is ErrBadCache, with an error that says which.
func TestCacheRejectsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "table.pb")
	payload := []byte("a table, or near enough")
	if err := WriteCache(path, CacheEdgeTable, payload); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name, file, magic string
		max               int
		want              string
	}{
		{"empty", "", CacheEdgeTable, 1024, "truncated to 0 bytes"},
		{"inside the header", string(good[:10]), CacheEdgeTable, 1024, "truncated to 10 bytes"},
		{"torn payload", string(good[:len(good)-3]), CacheEdgeTable, 1024, "checksum mismatch"},
		{"header only", string(good[:12]), CacheEdgeTable, 1024, "checksum mismatch"},
		{"trailing bytes", string(good) + "x", CacheEdgeTable, 1024, "checksum mismatch"},
		{"flipped payload byte", string(flip(len(good) - 1)), CacheEdgeTable, 1024, "checksum mismatch"},
		{"flipped checksum byte", string(flip(9)), CacheEdgeTable, 1024, "checksum mismatch"},
		{"flipped magic byte", string(flip(0)), CacheEdgeTable, 1024, "not \"MRDNTBL1\""},
		{"the other kind", string(good), CacheLeafSnapshot, 1024, "not \"MRDNLEAF\""},
		{"not a cache", "{\"revision\": 3}", CacheEdgeTable, 1024, "starts with"},
		{"over the cap", string(good), CacheEdgeTable, len(payload) - 1, "payload over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadCache(path, tc.magic, tc.max)
			if !errors.Is(err, ErrBadCache) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("read %d bytes, err %v; want ErrBadCache saying %q", len(got), err, tc.want)
			}
		})
	}
}

// The files in testdata were written by the edge's and the leaf's own
// writers before they shared this one: deployed caches must still load,
// and this writer must write them byte for byte again.
func TestCacheGolden(t *testing.T) {
	for _, tc := range []struct{ file, magic string }{
		{"edge-table.cache", CacheEdgeTable},
		{"leaf-snapshot.cache", CacheLeafSnapshot},
	} {
		t.Run(tc.file, func(t *testing.T) {
			golden := filepath.Join("testdata", tc.file)
			payload, err := ReadCache(golden, tc.magic, DefaultMaxBytes)
			if err != nil {
				t.Fatal(err)
			}
			var tab *tablev1.RoutingTable
			if tc.magic == CacheEdgeTable {
				tab, err = Decode(payload, DefaultMaxBytes)
			} else {
				pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
				if err := Verify([]ed25519.PublicKey{pub}, ContextSnapshot, SignatureField, payload); err != nil {
					t.Fatal(err)
				}
				r := &tablev1.SnapshotReply{}
				err = proto.Unmarshal(payload, r)
				tab = r.GetTable()
			}
			if err != nil || tab.GetRevision() != 7 || tab.GetEpoch() != 2 || tab.GetClusterId() != "golden" {
				t.Fatalf("table %d/%d of %q (%v); want revision 7, epoch 2 of \"golden\"", tab.GetRevision(), tab.GetEpoch(), tab.GetClusterId(), err)
			}
			if err := Validate(tab); err != nil {
				t.Fatal(err)
			}
			again := filepath.Join(t.TempDir(), tc.file)
			if err := WriteCache(again, tc.magic, payload); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(golden)
			if got, _ := os.ReadFile(again); !bytes.Equal(got, want) {
				t.Fatalf("rewritten file differs from the golden one: %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// FuzzReadCache feeds arbitrary files to the reader: it never panics,
// never returns more than the cap, and what it accepts is exactly a file
// the writer frames the same way.
func FuzzReadCache(f *testing.F) {
	for _, name := range []string{"edge-table.cache", "leaf-snapshot.cache"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(cacheHeader(CacheEdgeTable, nil))
	f.Add([]byte(CacheEdgeTable))
	f.Add([]byte{})
	const max = 1 << 12
	f.Fuzz(func(t *testing.T, file []byte) {
		for _, magic := range []string{CacheEdgeTable, CacheLeafSnapshot} {
			payload, err := ParseCache(file, magic, max)
			if err != nil {
				if !errors.Is(err, ErrBadCache) {
					t.Fatalf("error %v is not ErrBadCache", err)
				}
				continue
			}
			if len(payload) > max {
				t.Fatalf("payload of %d bytes over the cap %d", len(payload), max)
			}
			if framed := append(cacheHeader(magic, payload), payload...); !bytes.Equal(framed, file) {
				t.Fatalf("accepted a file the writer would not write")
			}
		}
	})
}
