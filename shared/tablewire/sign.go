package tablewire

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Signatures. The leader signs every TableUpdate, Heartbeat and
// SnapshotReply it sends with the cluster's ed25519 table key; an edge
// verifies each against the public keys pinned in its config before it
// looks inside. The signature is a field of the message itself
// (SignatureField for updates and snapshot replies, HeartbeatSignatureField
// for heartbeats), computed over the message's other bytes exactly as
// sent, so nothing is re-encoded on either side, prefixed by a context
// string naming the message kind so that one kind's signature cannot be
// passed off as another's.

// Signature contexts.
const (
	ContextUpdate    = "meridian.table.v1.TableUpdate"
	ContextHeartbeat = "meridian.table.v1.Heartbeat"
	ContextSnapshot  = "meridian.table.v1.SnapshotReply"
)

// Field numbers of the signature in each signed message.
const (
	SignatureField          protowire.Number = 100 // TableUpdate, SnapshotReply
	HeartbeatSignatureField protowire.Number = 102 // Heartbeat
)

// KeyPrefix starts a public key written in config: "ed25519:<base64>".
const KeyPrefix = "ed25519:"

// ErrSignature wraps every reason a message's signature does not verify.
var ErrSignature = errors.New("signature does not verify")

// FormatPublicKey writes a public key as "ed25519:<base64>".
func FormatPublicKey(pub ed25519.PublicKey) string {
	return KeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads "ed25519:<base64>".
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), KeyPrefix)
	if !ok {
		return nil, fmt.Errorf("table public key %q: want %s<base64>", s, KeyPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("table public key %q: want %d bytes of standard base64", s, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func signedBytes(ctx string, msg []byte) []byte {
	b := make([]byte, 0, len(ctx)+1+len(msg))
	b = append(b, ctx...)
	b = append(b, 0)
	return append(b, msg...)
}

// Sign returns msg, an encoded message without its signature field, with
// the signature field appended.
func Sign(key ed25519.PrivateKey, ctx string, field protowire.Number, msg []byte) []byte {
	sig := ed25519.Sign(key, signedBytes(ctx, msg))
	out := make([]byte, len(msg), len(msg)+len(sig)+4)
	copy(out, msg)
	out = protowire.AppendTag(out, field, protowire.BytesType)
	return protowire.AppendBytes(out, sig)
}

// Verify checks b's signature against any of keys. The signed bytes are
// b without its signature field; a message with no signature, two of
// them, or one no key made fails with ErrSignature.
func Verify(keys []ed25519.PublicKey, ctx string, field protowire.Number, b []byte) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no table public key is configured", ErrSignature)
	}
	var sig []byte
	// Sign appends the signature, so the signed bytes are usually b's
	// prefix; they are copied only when other fields follow it.
	var unsigned []byte
	sigAt, copied := -1, false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrDecode, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return fmt.Errorf("%w: %v", ErrDecode, protowire.ParseError(m))
		}
		if num == field {
			if sig != nil || typ != protowire.BytesType {
				return fmt.Errorf("%w: malformed signature field", ErrSignature)
			}
			v, _ := protowire.ConsumeBytes(rest[n:])
			if v == nil {
				v = []byte{}
			}
			sig, sigAt = v, len(b)-len(rest)
		} else if sigAt >= 0 {
			if !copied {
				unsigned, copied = append(make([]byte, 0, len(b)), b[:sigAt]...), true
			}
			unsigned = append(unsigned, rest[:n+m]...)
		}
		rest = rest[n+m:]
	}
	if !copied && sigAt >= 0 {
		unsigned = b[:sigAt]
	}
	if sig == nil {
		return fmt.Errorf("%w: the message is not signed", ErrSignature)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrSignature, len(sig))
	}
	msg := signedBytes(ctx, unsigned)
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w: not signed by a pinned table key", ErrSignature)
}

// SignatureOverhead is the most bytes a signature field adds to a
// message.
const SignatureOverhead = 2 + 1 + ed25519.SignatureSize
