package usage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var b []byte
	for _, p := range []string{"a", "hello", string(make([]byte, 1000))} {
		b = appendFrame(b, []byte(p))
	}
	ps, valid, err := readFrames(b)
	if err != nil || valid != len(b) || len(ps) != 3 || string(ps[1]) != "hello" {
		t.Fatalf("readFrames: %d payloads, valid %d of %d, err %v", len(ps), valid, len(b), err)
	}
}

func TestCorruptTailIsCut(t *testing.T) {
	good := appendFrame(appendFrame(nil, []byte("one")), []byte("two"))
	for name, tail := range map[string][]byte{
		"torn header":  {5, 0, 0},
		"torn payload": appendFrame(nil, []byte("three"))[:10],
		"bad checksum": func() []byte { f := appendFrame(nil, []byte("three")); f[len(f)-1] ^= 1; return f }(),
		"zero fill":    make([]byte, 64),
		"huge length":  {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), SpoolFile)
			if err := os.WriteFile(path, append(bytes.Clone(good), tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			sp, ps, cut, err := openSpool(path)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			if !errors.Is(cut, ErrCorrupt) || len(ps) != 2 {
				t.Fatalf("cut %v, %d payloads; want ErrCorrupt and the 2 good ones", cut, len(ps))
			}
			// The tail is gone from disk, and appends follow the good part.
			if err := sp.write(appendFrame(nil, []byte("four"))); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			ps, _, err = readFrames(data)
			if err != nil || len(ps) != 3 || string(ps[2]) != "four" {
				t.Fatalf("after cut and append: %d payloads, err %v", len(ps), err)
			}
		})
	}
}

// FuzzReadFrames: any bytes give a valid prefix whose frames re-encode to
// exactly that prefix, and never a panic.
func FuzzReadFrames(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendFrame(nil, []byte("record")))
	f.Add(appendFrame(appendFrame(nil, []byte("a")), []byte("bc"))[:12])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, valid, err := readFrames(data)
		if valid < 0 || valid > len(data) {
			t.Fatalf("valid %d outside 0..%d", valid, len(data))
		}
		if (err == nil) != (valid == len(data)) {
			t.Fatalf("err %v with valid %d of %d", err, valid, len(data))
		}
		var re []byte
		for _, p := range ps {
			re = appendFrame(re, p)
		}
		if !bytes.Equal(re, data[:valid]) {
			t.Fatal("frames do not re-encode to the valid prefix")
		}
	})
}
