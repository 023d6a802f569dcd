package leaf

import (
	"crypto/ed25519"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/tablegen"
)

// FuzzLeafCache feeds arbitrary bytes to what a leaf does with its cache
// file at start: the frame, then the signature, then the table. Nothing
// may panic, and nothing unsigned is ever held. The frame alone is
// fuzzed by tablewire's FuzzReadCache; this one is for what the leaf
// adds, the signature and the identities.
func FuzzLeafCache(f *testing.F) {
	// cacheFile is payload as the keeper writes it to disk.
	cacheFile := func(payload []byte) []byte {
		path := filepath.Join(f.TempDir(), "table.snap")
		if err := tablewire.WriteCache(path, tablewire.CacheLeafSnapshot, payload); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	t := tablegen.Table(mrand.New(mrand.NewPCG(1, 2)), 3)
	t.Entities.Nodes[0].NatsKey = "UCXF2TPTH2IA6ZT6ZPO6HMJPOIWCUFQQOFWH5XU6HG4ZW3XJK3WGBSTO"
	b, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Table: t})
	signed := tablewire.Sign(priv, tablewire.ContextSnapshot, tablewire.SignatureField, b)
	f.Add(cacheFile(signed))
	f.Add(cacheFile(b))
	f.Add(cacheFile(nil))
	f.Add([]byte(tablewire.CacheLeafSnapshot))
	f.Add([]byte{})
	damaged := cacheFile(signed)
	damaged[len(damaged)/2] ^= 1
	f.Add(damaged)
	k := &Keeper{cfg: Config{Keys: []ed25519.PublicKey{pub}, MaxBytes: tablewire.DefaultMaxBytes}}
	f.Fuzz(func(t *testing.T, file []byte) {
		payload, err := tablewire.ParseCache(file, tablewire.CacheLeafSnapshot, k.cfg.maxCached())
		if err != nil {
			return
		}
		h, err := k.check(payload)
		if err != nil {
			return
		}
		if tablewire.Verify(k.cfg.Keys, tablewire.ContextSnapshot, tablewire.SignatureField, h.reply) != nil {
			t.Fatal("held a snapshot whose signature does not verify")
		}
		for key, node := range h.keys {
			if key == "" || node == "" {
				t.Fatalf("admitted an empty key or node: %q → %q", key, node)
			}
		}
	})
}
