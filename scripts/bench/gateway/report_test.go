package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAddedRatio(t *testing.T) {
	us := time.Microsecond
	for _, tc := range []struct {
		name        string
		d, p, e     time.Duration
		want        float64
		wantClamped bool
	}{
		{"plain", 100 * us, 200 * us, 250 * us, 1.5, false},
		{"edge faster than proxy", 100 * us, 300 * us, 200 * us, 0.5, false},
		{"proxy adds nothing", 100 * us, 100 * us, 150 * us, 50, true},
		{"proxy faster than direct", 100 * us, 90 * us, 102 * us, 2, true},
	} {
		got := addedRatio(tc.d, tc.p, tc.e)
		if got.v != tc.want || got.clamped != tc.wantClamped {
			t.Errorf("%s: got %v (clamped %v), want %v (clamped %v)", tc.name, got.v, got.clamped, tc.want, tc.wantClamped)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "README.md")
	in := "# Meridian\n\nintro\n\n" + beginMarker + "\nold table\nold note\n" + endMarker + "\n\nmore\n"
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(path, "| new | table |\n\nnote\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# Meridian\n\nintro\n\n" + beginMarker + "\n\n| new | table |\n\nnote\n\n" + endMarker + "\n\nmore\n"
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// Idempotent: a second run gives the same file.
	if err := replaceSection(path, "| new | table |\n\nnote\n"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(again) != want {
		t.Errorf("second run changed the file:\n%s", again)
	}
}

func TestReplaceSectionWithoutMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	for _, in := range []string{
		"# no markers\n",
		"# end before begin\n" + endMarker + "\n" + beginMarker + "\n",
		"# only begin\n" + beginMarker + "\n",
	} {
		if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := replaceSection(path, "table"); !errors.Is(err, errNoMarkers) {
			t.Errorf("%q: err = %v, want errNoMarkers", in, err)
		}
		if got, _ := os.ReadFile(path); string(got) != in {
			t.Errorf("%q: file changed to %q", in, got)
		}
	}
}
