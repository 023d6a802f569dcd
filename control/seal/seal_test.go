package seal

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	kek, err := ParseKEK(NewKEK())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("ca private key bytes")
	b, err := Seal(kek, "ca-key", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, secret) {
		t.Fatal("sealed blob holds the plaintext")
	}
	got, err := Open(kek, "ca-key", b)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other, _ := ParseKEK(NewKEK())
	if _, err := Open(other, "ca-key", b); !errors.Is(err, ErrOpen) {
		t.Fatalf("another KEK opened it: %v", err)
	}
	if _, err := Open(kek, "table-key", b); !errors.Is(err, ErrOpen) {
		t.Fatalf("another label opened it: %v", err)
	}
	b[len(b)-1] ^= 1
	if _, err := Open(kek, "ca-key", b); !errors.Is(err, ErrOpen) {
		t.Fatalf("altered blob opened: %v", err)
	}
	if _, err := ParseKEK("short"); !errors.Is(err, ErrKEK) {
		t.Fatalf("ParseKEK(short) = %v", err)
	}
}
