// Package seal encrypts small secrets at rest (the cluster CA key, the
// table-signing key) with a key-encryption key (KEK) from the control
// node's config: AES-256-GCM with a random nonce, so the secret can sit in
// Raft-replicated state, snapshots and backups without being readable by
// whoever holds them.
//
// It must never log a key or a plaintext, and never choose a KEK itself:
// the KEK comes from the operator.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is a KEK's length, bytes.
const KeySize = 32

// version is the first byte of a sealed blob, so the format can change.
const version = 1

// Errors.
var (
	// ErrKEK is a KEK that is not KeySize bytes.
	ErrKEK = errors.New("seal: the key-encryption key must be 32 bytes")
	// ErrOpen is a sealed blob that does not open with this KEK: another
	// KEK sealed it, or it was altered.
	ErrOpen = errors.New("seal: cannot open: wrong key-encryption key or altered data")
)

// ParseKEK reads a KEK written as 64 hex digits or as standard base64 of
// 32 bytes.
func ParseKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	return nil, fmt.Errorf("%w (64 hex digits or base64)", ErrKEK)
}

// NewKEK returns a random KEK as 64 hex digits, for `meridianctl` to
// print once.
func NewKEK() string {
	b := make([]byte, KeySize)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func aead(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KeySize {
		return nil, ErrKEK
	}
	blk, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// Seal encrypts plaintext under kek. label binds the blob to its use
// (additional data): a blob sealed as "ca-key" does not open as anything
// else.
func Seal(kek []byte, label string, plaintext []byte) ([]byte, error) {
	g, err := aead(kek)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+g.NonceSize(), 1+g.NonceSize()+len(plaintext)+g.Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return g.Seal(out, out[1:], plaintext, []byte(label)), nil
}

// Open decrypts a blob from Seal with the same kek and label.
func Open(kek []byte, label string, sealed []byte) ([]byte, error) {
	g, err := aead(kek)
	if err != nil {
		return nil, err
	}
	if len(sealed) < 1+g.NonceSize()+g.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	n := sealed[1 : 1+g.NonceSize()]
	pt, err := g.Open(nil, n, sealed[1+g.NonceSize():], []byte(label))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
