// Package enginetest gives tests what they need to run the local engine
// for real: the Ollama binary `make ollama` builds and the project's tiny
// generated model. It is for tests only and must never reach a binary.
package enginetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

// Binary returns the Ollama binary to test with: $MERIDIAN_OLLAMA, or
// bin/ollama at the repository root. When there is none the test is
// skipped, or fails when MERIDIAN_REQUIRE_OLLAMA is set (as `make test`
// does), so CI can never silently not run it.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("MERIDIAN_OLLAMA")
	if bin == "" {
		bin = filepath.Join(RepoRoot(t), "bin", "ollama")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("MERIDIAN_REQUIRE_OLLAMA") != "" {
			t.Fatalf("no Ollama binary at %s: run `make ollama`", bin)
		}
		t.Skipf("no Ollama binary at %s: run `make ollama` (make test does)", bin)
	}
	return bin
}

// RepoRoot returns the folder holding go.mod above the test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, _ := os.Getwd()
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	t.Fatal("no go.mod above the test")
	return ""
}

// Model writes the tiny model of the given variant (tinygguf.VariantChain
// or VariantRepeat) to dir/name.gguf and returns the path.
func Model(t testing.TB, dir, name, variant string) string {
	t.Helper()
	opt := tinygguf.DefaultOptions()
	opt.Variant = variant
	var b bytes.Buffer
	if err := tinygguf.Write(&b, opt); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".gguf")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Expected is the tiny model's answer to any chat, n tokens long: the
// ChatML prompt ends in a newline, which the chain continues "abc…".
func Expected(n int) string { return tinygguf.Expected(tinygguf.VariantChain, '\n', n) }
