package tablewire

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

func bigTable(rev uint64, routes, variant int) *tablev1.RoutingTable {
	t := &tablev1.RoutingTable{Schema: Schema, Revision: rev, Entities: &tablev1.Entities{
		Providers: []*controlv1.Provider{{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_K"}},
	}}
	for i := range routes {
		id := fmt.Sprintf("model-%04d", i)
		t.Entities.Models = append(t.Entities.Models, &controlv1.Model{Id: id})
		t.Entities.Routes = append(t.Entities.Routes, &controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "oai", Model: fmt.Sprint(id, variant)}}})
	}
	return t
}

// BenchmarkEdgeApply1000Routes is an edge's work for one change to a
// 1,000-route table: apply the delta, validate, convert and compile.
func BenchmarkEdgeApply1000Routes(b *testing.B) {
	old := bigTable(1, 1000, 0)
	next := bigTable(2, 1000, 0)
	next.Entities.Routes[500] = &controlv1.Route{Model: "model-0500", Targets: []*controlv1.Target{{Provider: "oai", Model: "x"}}}
	d := Diff(old, next)
	r := Resolver{Getenv: func(string) string { return "k" }}
	conv := NewConverter(r)
	conv.ToTable(old)
	b.ReportAllocs()
	for b.Loop() {
		t, err := ApplyDelta(old, d)
		if err != nil {
			b.Fatal(err)
		}
		tab, _, err := conv.ToTable(t)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := table.Compile(tab); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyFull1000Routes is the signature check an edge runs on
// a whole 1,000-route table update before decoding it; compare it with
// BenchmarkEdgeApply1000Routes, the work it guards.
func BenchmarkVerifyFull1000Routes(b *testing.B) {
	raw, _ := Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Full{Full: bigTable(1, 1000, 0)}})
	key := ed25519.NewKeyFromSeed(make([]byte, 32))
	signed := Sign(key, ContextUpdate, SignatureField, raw)
	keys := []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}
	b.SetBytes(int64(len(signed)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(keys, ContextUpdate, SignatureField, signed); err != nil {
			b.Fatal(err)
		}
	}
}
