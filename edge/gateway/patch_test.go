package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// deltaCase is a table of n routes and a delta that edits one of them.
func deltaCase(n int) (*tablev1.RoutingTable, *tablev1.TableDelta) {
	t := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: 1, Entities: &tablev1.Entities{
		Providers: []*controlv1.Provider{{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_K"}},
	}}
	for i := range n {
		id := fmt.Sprintf("model-%04d", i)
		t.Entities.Models = append(t.Entities.Models, &controlv1.Model{Id: id})
		t.Entities.Routes = append(t.Entities.Routes, &controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "oai", Model: id}}})
	}
	d := &tablev1.TableDelta{Schema: tablewire.Schema, PrevRevision: 1, Revision: 2, Upserts: &tablev1.Entities{
		Routes: []*controlv1.Route{{Model: fmt.Sprintf("model-%04d", n/2), Targets: []*controlv1.Target{{Provider: "oai", Model: "x"}}}},
	}}
	return t, d
}

// keyDeltaCase is a table of 10 routes and n keys, and a delta that
// issues one more key, in the middle of the list by ID.
func keyDeltaCase(n int) (*tablev1.RoutingTable, *tablev1.TableDelta) {
	t, _ := deltaCase(10)
	key := func(i int) *controlv1.Key {
		return &controlv1.Key{Id: fmt.Sprintf("key-%06d", i), Hash: fmt.Sprintf("sha256:%064x", i+1)}
	}
	for i := range n {
		t.Entities.Keys = append(t.Entities.Keys, key(2*i))
	}
	d := &tablev1.TableDelta{Schema: tablewire.Schema, PrevRevision: 1, Revision: 2, Upserts: &tablev1.Entities{
		Keys: []*controlv1.Key{key(n + 1)},
	}}
	return t, d
}

// TestPatchTableServesTheChange checks a patched gateway routes the
// changed model to its new target and leaves the rest as they were.
func TestPatchTableServesTheChange(t *testing.T) {
	wire, d := deltaCase(20)
	conv := tablewire.NewConverter(tablewire.Resolver{Getenv: func(string) string { return "k" }})
	tab, _, err := conv.ToTable(wire)
	if err != nil {
		t.Fatal(err)
	}
	g := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer g.Close()
	if err := g.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	next, _, ch, err := tablewire.ApplyDeltaIndexed(wire, nil, d)
	if err != nil {
		t.Fatal(err)
	}
	ptab, tch, ok, err := conv.Patch(tab, next, ch)
	if err != nil || !ok {
		t.Fatalf("Patch: ok %v, err %v", ok, err)
	}
	if err := g.PatchTable(ptab, tch); err != nil {
		t.Fatal(err)
	}
	if got := g.Table().Revision(); got != 2 {
		t.Fatalf("revision %d after the patch, want 2", got)
	}
	r, _ := g.Table().Route("model-0010")
	if r.Targets[0].Model != "x" {
		t.Fatalf("changed route targets %+v", r.Targets)
	}
	r, _ = g.Table().Route("model-0011")
	if r.Targets[0].Model != "model-0011" {
		t.Fatalf("unchanged route targets %+v", r.Targets)
	}
	if tg := g.Router().Snapshot().Table().Table().Routes[10].Targets[0]; tg != (table.Target{Provider: "oai", Model: "x", Weight: 0}) {
		t.Fatal("the router's view does not hold the change")
	}
}

// BenchmarkDeltaApply is an edge's work for a delta editing one route,
// at 10 and 1,000 routes, and for one issuing a key, at 10 and 10,000
// keys: "patch" is the path tablesync takes
// (ApplyDeltaIndexed, Converter.Patch, PatchTable), "full" rebuilds the
// whole table (ApplyDelta, ToTable, SetTable). The patch path's time
// should barely move with the table's size.
func BenchmarkDeltaApply(b *testing.B) {
	type benchCase struct {
		name string
		wire *tablev1.RoutingTable
		d    *tablev1.TableDelta
	}
	var cases []benchCase
	for _, n := range []int{10, 1000} {
		wire, d := deltaCase(n)
		cases = append(cases, benchCase{fmt.Sprintf("routes=%d", n), wire, d})
	}
	for _, n := range []int{10, 10000} {
		wire, d := keyDeltaCase(n)
		cases = append(cases, benchCase{fmt.Sprintf("keys=%d", n), wire, d})
	}
	for _, c := range cases {
		wire, d := c.wire, c.d
		res := tablewire.Resolver{Getenv: func(string) string { return "k" }}
		for _, mode := range []string{"patch", "full"} {
			b.Run(c.name+"/"+mode, func(b *testing.B) {
				conv := tablewire.NewConverter(res)
				tab, _, err := conv.ToTable(wire)
				if err != nil {
					b.Fatal(err)
				}
				g := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				defer g.Close()
				if err := g.SetTable(tab); err != nil {
					b.Fatal(err)
				}
				// The index is built once per table, as an edge does on
				// its first leaf delta after a snapshot.
				_, ix, _, _ := tablewire.ApplyDeltaIndexed(wire, nil, d)
				b.ReportAllocs()
				for b.Loop() {
					if mode == "full" {
						next, err := tablewire.ApplyDelta(wire, d)
						if err != nil {
							b.Fatal(err)
						}
						t, _, err := conv.ToTable(next)
						if err == nil {
							err = g.SetTable(t)
						}
						if err != nil {
							b.Fatal(err)
						}
						continue
					}
					next, _, ch, err := tablewire.ApplyDeltaIndexed(wire, ix, d)
					if err != nil {
						b.Fatal(err)
					}
					t, tch, ok, err := conv.Patch(tab, next, ch)
					if err != nil || !ok {
						b.Fatal(ok, err)
					}
					if err := g.PatchTable(t, tch); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
