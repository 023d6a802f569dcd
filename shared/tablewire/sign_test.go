package tablewire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

func TestSignVerify(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32))
	keys := []ed25519.PublicKey{other.Public().(ed25519.PublicKey), key.Public().(ed25519.PublicKey)}
	raw, _ := Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: bigTable(7, 3, 0)}})
	signed := Sign(key, ContextUpdate, SignatureField, raw)
	if err := Verify(keys, ContextUpdate, SignatureField, signed); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	// The signature field first and the rest after it: the same bytes.
	sig := signed[len(raw):]
	moved := append(append([]byte{}, sig...), raw...)
	if err := Verify(keys, ContextUpdate, SignatureField, moved); err != nil {
		t.Fatalf("signature first: %v", err)
	}
	tampered := bytes.Clone(signed)
	tampered[len(raw)/2] ^= 1
	extra := protowire.AppendBytes(protowire.AppendTag(bytes.Clone(signed), 3, protowire.BytesType), []byte("x"))
	for name, c := range map[string]struct {
		keys []ed25519.PublicKey
		ctx  string
		b    []byte
	}{
		"tampered":          {keys, ContextUpdate, tampered},
		"field appended":    {keys, ContextUpdate, extra},
		"unsigned":          {keys, ContextUpdate, raw},
		"another kind":      {keys, ContextHeartbeat, signed},
		"key not pinned":    {keys[:1], ContextUpdate, signed},
		"no key pinned":     {nil, ContextUpdate, signed},
		"signed twice":      {keys, ContextUpdate, append(bytes.Clone(signed), sig...)},
		"other key's bytes": {keys, ContextUpdate, Sign(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32)), ContextUpdate, SignatureField, raw)},
	} {
		if err := Verify(c.keys, c.ctx, SignatureField, c.b); !errors.Is(err, ErrSignature) && !errors.Is(err, ErrDecode) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
