package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kek")
	if err := Generate(p); err != nil {
		t.Fatal(err)
	}
	k, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	blob, err := k.Seal(secret, "table-signing-key")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, secret) || !Sealed(blob) {
		t.Fatal("sealed blob holds the plaintext")
	}
	got, err := k.Open(blob, "table-signing-key")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %v", err)
	}
	if _, err := k.Open(blob, "ca-key"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with another aad: %v, want ErrCorrupt", err)
	}
	other, _ := New(bytes.Repeat([]byte{7}, 32))
	if _, err := other.Open(blob, "table-signing-key"); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("open with another KEK: %v, want ErrWrongKEK", err)
	}
	var none *KEK
	if _, err := none.Open(blob, "table-signing-key"); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("open without KEK: %v, want ErrWrongKEK", err)
	}
	clear, _ := none.Seal(secret, "x")
	if got, err := k.Open(clear, "x"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("a clear blob opens with any KEK: %v", err)
	}
}

func TestLoadRefusesOpenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(p, bytes.Repeat([]byte("a"), 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Fatal("a world-readable KEK file loaded")
	}
}
