// Package seal encrypts key material the control plane keeps in its
// Raft-replicated state (the table-signing key, the cluster CA key), so a
// copy of the Raft log, a snapshot or a backup does not hand over the
// keys. The key-encryption key (KEK) comes from a file named in every
// control node's config; all control nodes of a cluster use the same one.
//
// Sealed blobs say which KEK sealed them (the first 8 bytes of its
// SHA-256), so a node given the wrong KEK fails with a clear error rather
// than garbage. Without a KEK, blobs are stored in the clear with a
// marker, for development only; the control plane warns at start. This
// package must never log or return key material in an error.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Names (additional authenticated data) of the secrets sealed in the
// replicated state; one sealed secret cannot be opened as another.
const (
	// AADTableSigningKey is the ed25519 seed that signs routing tables.
	AADTableSigningKey = "meridian table-signing key"
	// AADClusterCAKey is the cluster CA's PKCS#8 private key, which signs
	// node certificates.
	AADClusterCAKey = "meridian cluster CA key"
)

// KEK is a 32-byte AES-256-GCM key-encryption key.
type KEK struct {
	aead cipher.AEAD
	id   [8]byte
	// previous are retired KEKs that still open blobs sealed with them,
	// during a KEK rotation (WithPrevious).
	previous []*KEK
}

// WithPrevious returns k that also opens blobs sealed by the retired
// KEKs old; Seal always uses k. The control plane re-seals what it
// finds sealed by an old KEK, after which the old file can go.
func (k *KEK) WithPrevious(old ...*KEK) *KEK {
	c := *k
	c.previous = append(append([]*KEK{}, k.previous...), old...)
	return &c
}

// Current reports whether blob is sealed by k itself (not by a retired
// KEK, and not in the clear while k exists).
func (k *KEK) Current(blob []byte) bool {
	if k == nil {
		return len(blob) > 0 && blob[0] == versionClear
	}
	return len(blob) >= 9 && blob[0] == versionGCM && bytes.Equal(blob[1:9], k.id[:])
}

// Blob format versions, the first byte of a sealed blob.
const (
	versionClear = 0 // no KEK configured: plaintext follows
	versionGCM   = 1 // KEK id (8), nonce (12), AES-256-GCM ciphertext
)

// Errors from Open.
var (
	// ErrWrongKEK means the blob was sealed with another KEK (or with
	// one while this node has none).
	ErrWrongKEK = errors.New("sealed with a different key-encryption key")
	// ErrCorrupt means the blob does not decrypt or parse.
	ErrCorrupt = errors.New("sealed key material is corrupt")
)

// New returns a KEK from 32 raw bytes.
func New(key []byte) (*KEK, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("seal: a key-encryption key is 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &KEK{aead: aead}
	sum := sha256.Sum256(key)
	copy(k.id[:], sum[:8])
	return k, nil
}

// Load reads a KEK file: 32 bytes as 64 hex digits or standard base64,
// surrounding whitespace ignored. The file must not be readable by group
// or others.
func Load(path string) (*KEK, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key-encryption key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("seal: key-encryption key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key-encryption key: %w", err)
	}
	k, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("seal: key-encryption key %s must hold 32 bytes as hex or base64", path)
	}
	return k, nil
}

// Parse reads a KEK written as 64 hex digits or standard base64,
// surrounding whitespace ignored.
func Parse(s string) (*KEK, error) {
	s = strings.TrimSpace(s)
	var key []byte
	var err error
	if len(s) == 64 {
		key, err = hex.DecodeString(s)
	} else {
		key, err = base64.StdEncoding.DecodeString(s)
	}
	if err != nil || len(key) != 32 {
		return nil, errors.New("seal: a key-encryption key is 32 bytes as hex or base64")
	}
	return New(key)
}

// Generate writes a new random KEK file (hex, mode 0600) at path; it
// refuses to overwrite one.
func Generate(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(key)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ID returns the KEK's identifier (hex of the first 8 bytes of its
// SHA-256); it is safe to log.
func (k *KEK) ID() string {
	if k == nil {
		return "none"
	}
	return hex.EncodeToString(k.id[:])
}

// Seal encrypts plaintext; aad names what it is (e.g. "table-signing-key")
// and must be given again to Open, so one sealed secret cannot be passed
// off as another. A nil KEK stores the plaintext in the clear.
func (k *KEK) Seal(plaintext []byte, aad string) ([]byte, error) {
	if k == nil {
		return append([]byte{versionClear}, plaintext...), nil
	}
	out := make([]byte, 1+8+k.aead.NonceSize(), 1+8+k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	out[0] = versionGCM
	copy(out[1:9], k.id[:])
	nonce := out[9:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, nonce, plaintext, []byte(aad)), nil
}

// Open decrypts a blob made by Seal with the same KEK and aad. A blob
// stored in the clear opens with any KEK, or none, so a cluster that
// started without a KEK can add one (new material is then sealed).
func (k *KEK) Open(blob []byte, aad string) ([]byte, error) {
	if len(blob) == 0 {
		return nil, ErrCorrupt
	}
	switch blob[0] {
	case versionClear:
		return bytes.Clone(blob[1:]), nil
	case versionGCM:
		if k == nil {
			return nil, fmt.Errorf("%w: this node has no key-encryption key configured", ErrWrongKEK)
		}
		ns := k.aead.NonceSize()
		if len(blob) < 1+8+ns+k.aead.Overhead() {
			return nil, ErrCorrupt
		}
		if !bytes.Equal(blob[1:9], k.id[:]) {
			for _, p := range k.previous {
				if bytes.Equal(blob[1:9], p.id[:]) {
					return p.Open(blob, aad)
				}
			}
			return nil, fmt.Errorf("%w: blob sealed by KEK %x, this node has %s", ErrWrongKEK, blob[1:9], k.ID())
		}
		pt, err := k.aead.Open(nil, blob[9:9+ns], blob[9+ns:], []byte(aad))
		if err != nil {
			return nil, ErrCorrupt
		}
		return pt, nil
	}
	return nil, fmt.Errorf("%w: unknown format %d", ErrCorrupt, blob[0])
}

// Sealed reports whether a blob is encrypted (not stored in the clear).
func Sealed(blob []byte) bool { return len(blob) > 0 && blob[0] == versionGCM }
