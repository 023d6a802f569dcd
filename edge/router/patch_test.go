package router

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/tablegen"
)

// TestIncrementalMatchesFullCompile follows random delta sequences the
// way an edge applies them, patching at every layer (ApplyDeltaIndexed,
// Converter.Patch, Compiled.Patch, PatchTable), and rebuilds the same
// revision from nothing beside it (ApplyDelta, ToTable, Compile,
// SetTable): both must accept the same deltas and end up with the same
// converted table, the same lookups and the same candidates for every
// model.
func TestIncrementalMatchesFullCompile(t *testing.T) {
	res := tablewire.Resolver{Getenv: func(name string) string {
		if name == "MERIDIAN_SECRET_UNSET" {
			return ""
		}
		return "sk-test"
	}, LocalEngine: true}
	members := []Member{{ID: "edge-1", Region: "eu", Alive: true, Ready: []string{"tiny-1"}}, {ID: "edge-2", Region: "us", Alive: true, Ready: []string{"tiny-2", "tiny-0"}}}
	patchedSteps := 0
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 99))
		wire := tablegen.Table(rng, 5+rng.IntN(30))
		conv := tablewire.NewConverter(res)
		tab, _, err := conv.ToTable(wire)
		if err != nil {
			t.Fatal(err)
		}
		comp, err := table.Compile(tab)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		cfg := DefaultConfig()
		cfg.Node, cfg.Region = "edge-0", "ap"
		inc := New(cfg)
		inc.SetMembers(members)
		inc.SetTable(comp)
		var ix *tablewire.Index
		hashes := map[string]bool{}
		for step := range 120 {
			d := tablegen.Delta(rng, wire, 8)
			next, nix, ch, err := tablewire.ApplyDeltaIndexed(wire, ix, d)
			if err != nil {
				continue // TestApplyDeltaIndexedMatchesFull covers rejections
			}
			// The whole way.
			fullTab, fullUnusable, ferr := tablewire.NewConverter(res).ToTable(next)
			var fullComp *table.Compiled
			if ferr == nil {
				fullComp, ferr = table.Compile(fullTab)
			}
			// The incremental way, falling back as tablesync does.
			var incTab *table.Table
			var incComp *table.Compiled
			ptab, pch, ok, ierr := conv.Patch(tab, next, ch)
			patched := false
			if ierr == nil && ok {
				incTab = ptab
				incComp, patched, ierr = comp.Patch(ptab, pch)
			} else if ierr == nil {
				incTab, _, ierr = conv.ToTable(next)
				if ierr == nil {
					incComp, ierr = table.Compile(incTab)
				}
			}
			if (ferr == nil) != (ierr == nil) {
				t.Fatalf("seed %d step %d: full says %v, incremental says %v", seed, step, ferr, ierr)
			}
			if ferr != nil {
				continue // a table the edge refuses: both keep the old one
			}
			if patched {
				patchedSteps++
				inc.PatchTable(incComp, pch.Routes)
			} else {
				inc.SetTable(incComp)
			}
			full := New(cfg)
			full.SetMembers(members)
			full.SetTable(fullComp)
			if !reflect.DeepEqual(incTab, fullTab) {
				t.Fatalf("seed %d step %d (patched %v): converted tables differ\nincremental %+v\nfull        %+v", seed, step, patched, incTab, fullTab)
			}
			_ = fullUnusable
			for _, k := range fullTab.Keys {
				hashes[k.Hash[len("sha256:"):]] = true
			}
			compareCompiled(t, fmt.Sprintf("seed %d step %d", seed, step), incComp, fullComp, hashes)
			compareViews(t, fmt.Sprintf("seed %d step %d", seed, step), inc, full)
			wire, ix, tab, comp = next, nix, incTab, incComp
		}
	}
	if patchedSteps < 300 {
		t.Fatalf("only %d steps took the patch path: the test exercises too little", patchedSteps)
	}
}

func compareCompiled(t *testing.T, at string, a, b *table.Compiled, hashes map[string]bool) {
	t.Helper()
	for _, m := range b.Models() {
		ra, oka := a.Route(m.ID)
		rb, okb := b.Route(m.ID)
		if oka != okb || oka && !reflect.DeepEqual(*ra, *rb) {
			t.Fatalf("%s: route %s differs: %+v vs %+v", at, m.ID, ra, rb)
		}
	}
	for h := range hashes {
		ka, oka := a.KeyByHash(h)
		kb, okb := b.KeyByHash(h)
		if oka != okb || oka && !reflect.DeepEqual(*ka, *kb) {
			t.Fatalf("%s: key %s differs: %v %+v vs %v %+v", at, h, oka, ka, okb, kb)
		}
	}
	for _, tn := range b.Table().Tenants {
		ta, _ := a.Tenant(tn.ID)
		if ta == nil || !reflect.DeepEqual(*ta, tn) {
			t.Fatalf("%s: tenant %s differs", at, tn.ID)
		}
	}
	if a.HasKeys() != b.HasKeys() {
		t.Fatalf("%s: HasKeys differs", at)
	}
}

// candShape is a candidate without its pointers.
type candShape struct {
	c      cand
	model  string
	member string
}

func shapes(mv *modelView) []candShape {
	var out []candShape
	for _, c := range mv.cands {
		s := candShape{c: c}
		if c.model != nil {
			s.model = c.model.ID
		}
		if c.member != nil {
			s.member = c.member.get().ID
		}
		s.c.model, s.c.member, s.c.stats = nil, nil, nil
		out = append(out, s)
	}
	return out
}

func compareViews(t *testing.T, at string, a, b *Router) {
	t.Helper()
	va, vb := a.view.Load(), b.view.Load()
	if va.models.Len() != vb.models.Len() {
		t.Fatalf("%s: %d model views, want %d", at, va.models.Len(), vb.models.Len())
	}
	vb.models.All(func(id string, mb *modelView) bool {
		ma, ok := va.models.Get(id)
		if !ok {
			t.Fatalf("%s: model %s missing", at, id)
		}
		if ma.caps != mb.caps || !reflect.DeepEqual(*ma.route, *mb.route) || !reflect.DeepEqual(*ma.model, *mb.model) ||
			!slices.EqualFunc(shapes(ma), shapes(mb), func(x, y candShape) bool { return reflect.DeepEqual(x, y) }) {
			t.Fatalf("%s: model %s: candidates differ\nincremental %+v\nfull        %+v", at, id, shapes(ma), shapes(mb))
		}
		for _, c := range ma.cands {
			if va.stats[c.key] != a.stats[c.key] {
				t.Fatalf("%s: stats for %s not in the view", at, c.key)
			}
		}
		return true
	})
}
