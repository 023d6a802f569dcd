package readme

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(p, []byte("a\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\nb\n"), 0o644)
	if err := Replace(p, "x", "\nnew\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "a\n<!-- bench:x:begin -->\nnew\n<!-- bench:x:end -->\nb\n" {
		t.Fatalf("got %q", b)
	}
	if err := Replace(p, "y", "z"); err == nil {
		t.Fatal("a missing section must be an error")
	}
}
