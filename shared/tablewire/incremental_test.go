package tablewire_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/tablegen"
)

// TestApplyDeltaIndexedMatchesFull applies random delta sequences both
// ways: checking only what each delta touches (ApplyDeltaIndexed) and
// validating the whole result (ApplyDelta). Both must accept and reject
// the same deltas and build the same tables.
func TestApplyDeltaIndexedMatchesFull(t *testing.T) {
	leaf, rejected := 0, 0
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		cur := tablegen.Table(rng, 5+rng.IntN(40))
		if err := tablewire.Validate(cur); err != nil {
			t.Fatalf("seed %d: generated table invalid: %v", seed, err)
		}
		var ix *tablewire.Index
		for step := range 150 {
			d := tablegen.Delta(rng, cur, 6)
			full, ferr := tablewire.ApplyDelta(cur, d)
			inc, nix, ch, ierr := tablewire.ApplyDeltaIndexed(cur, ix, d)
			if (ferr == nil) != (ierr == nil) {
				t.Fatalf("seed %d step %d: full apply says %v, incremental says %v\ndelta: %v", seed, step, ferr, ierr, d)
			}
			if ferr != nil {
				rejected++
				if !errors.Is(ierr, tablewire.ErrInvalid) {
					t.Fatalf("seed %d step %d: incremental error %v is not ErrInvalid", seed, step, ierr)
				}
				continue
			}
			if !proto.Equal(full, inc) {
				t.Fatalf("seed %d step %d: tables differ\nfull: %v\nincremental: %v", seed, step, full, inc)
			}
			if ch.Leaf {
				leaf++
				if nix == nil {
					t.Fatalf("seed %d step %d: a leaf delta returned no index", seed, step)
				}
			}
			cur, ix = inc, nix
		}
	}
	// The generator must exercise both paths and rejections, or this
	// test proves nothing.
	if leaf < 500 || rejected < 100 {
		t.Fatalf("only %d leaf deltas and %d rejections were exercised", leaf, rejected)
	}
}

// TestApplyDeltaIndexedChange checks the change a leaf delta reports.
func TestApplyDeltaIndexedChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	cur := tablegen.Table(rng, 3)
	d := &tablev1.TableDelta{Schema: tablewire.Schema, PrevRevision: 1, Revision: 2, Epoch: 1,
		Upserts: &tablev1.Entities{Routes: cur.GetEntities().GetRoutes()[:1], Keys: []*controlv1.Key{tablegen.Key(rng, "key-9", true)}},
		Deletes: &tablev1.EntityIDs{Keys: []string{"key-0"}, Routes: []string{"model-0001"}}}
	_, _, ch, err := tablewire.ApplyDeltaIndexed(cur, nil, d)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Leaf || len(ch.Routes) != 1 || ch.Routes[0] != cur.GetEntities().GetRoutes()[0].GetModel() ||
		len(ch.DeletedRoutes) != 1 || ch.DeletedRoutes[0] != "model-0001" ||
		len(ch.Keys) != 1 || ch.Keys[0] != "key-9" || len(ch.DeletedKeys) != 1 || ch.DeletedKeys[0] != "key-0" {
		t.Fatalf("change %+v", ch)
	}
	d.Upserts.Nodes = cur.GetEntities().GetNodes()[:1]
	if _, ix, ch, err := tablewire.ApplyDeltaIndexed(cur, nil, d); err != nil || ch.Leaf || ix != nil {
		t.Fatalf("a delta touching nodes: leaf %v, index %v, err %v", ch.Leaf, ix, err)
	}
}
