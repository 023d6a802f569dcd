package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReplaceSection(t *testing.T) {
	for _, mk := range markers {
		path := filepath.Join(t.TempDir(), "README.md")
		os.WriteFile(path, []byte("# x\n"+mk[0]+"\nold\n"+mk[1]+"\ntail\n"), 0o644)
		if err := replaceSection(path, "new table"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if s := string(b); strings.Contains(s, "old") || !strings.Contains(s, mk[0]+"\n\nnew table\n\n"+mk[1]+"\ntail") {
			t.Fatalf("got:\n%s", s)
		}
	}
	path := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(path, []byte("# no markers\n"), 0o644)
	if err := replaceSection(path, "x"); err == nil {
		t.Fatal("a README without markers was rewritten")
	}
}

func TestReport(t *testing.T) {
	r := results{fsyncP50: time.Millisecond, fsyncP99: 2 * time.Millisecond, writeP50: 3 * time.Millisecond, writeP99: 8 * time.Millisecond,
		writesPerS: 1500, viaFollowers: 1200, failovers: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}}
	out := report(Config{Writers: 16}, r)
	for _, want := range []string{"3.00 ms", "3.0× a raw fsync'd append", "1500 writes/s", "2000 ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
