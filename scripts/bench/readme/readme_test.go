package readme

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	begin, end := Markers("x")
	in := "# Meridian\n\nintro\n\n" + begin + "\nold table\nold note\n" + end + "\n\nmore\n"
	if err := os.WriteFile(path, []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	want := "# Meridian\n\nintro\n\n" + begin + "\n\n| new | table |\n\nnote\n\n" + end + "\n\nmore\n"
	for range 2 { // idempotent
		if err := Replace(path, "x", "| new | table |\n\nnote\n"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if string(b) != want {
			t.Fatalf("got\n%s\nwant\n%s", b, want)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v not kept", st.Mode())
	}
	for _, bad := range []string{"no markers\n", "# end before begin\n" + end + "\n" + begin + "\n", "# only begin\n" + begin + "\n"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if err := Replace(path, "x", "table"); !errors.Is(err, ErrNoMarkers) {
			t.Fatalf("%q: err = %v, want ErrNoMarkers", bad, err)
		}
		if b, _ := os.ReadFile(path); string(b) != bad {
			t.Fatalf("file changed despite the error: %q", b)
		}
	}
}
