package cache_test

import (
	"math"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/cache"
)

// unit returns a unit vector at angle a (radians) from the x axis.
func unit(a float64) []float32 { return []float32{float32(math.Cos(a)), float32(math.Sin(a)), 0} }

func TestSemanticSearch(t *testing.T) {
	s := cache.NewSemantic(3)
	ctx, other := cache.Key{1}, cache.Key{2}
	if _, _, ok := s.Search(ctx, unit(0)); ok {
		t.Fatal("an empty index matched")
	}
	s.Add(ctx, unit(0), cache.Key{10})
	s.Add(ctx, unit(math.Pi/2), cache.Key{11})
	s.Add(other, unit(0.01), cache.Key{12})
	k, sim, ok := s.Search(ctx, unit(0.1))
	if !ok || k != (cache.Key{10}) || math.Abs(sim-math.Cos(0.1)) > 1e-6 {
		t.Fatalf("nearest: %v %v %v", k, sim, ok)
	}
	if k, _, _ := s.Search(ctx, unit(1.5)); k != (cache.Key{11}) {
		t.Fatalf("nearest to 1.5 rad: %v", k)
	}
	// Contexts never mix: other's one vector is the only candidate there.
	if k, _, _ := s.Search(other, unit(math.Pi/2)); k != (cache.Key{12}) {
		t.Fatalf("other context: %v", k)
	}
	// The cap drops the oldest vector; re-adding an answer replaces its vector.
	s.Add(ctx, unit(math.Pi), cache.Key{13})
	if s.Len() != 3 {
		t.Fatalf("len %d", s.Len())
	}
	if k, _, _ := s.Search(ctx, unit(0)); k == (cache.Key{10}) {
		t.Fatal("the oldest vector outlived the cap")
	}
	s.Add(ctx, unit(0), cache.Key{13})
	if k, sim, _ := s.Search(ctx, unit(0)); k != (cache.Key{13}) || sim < 0.999 || s.Len() != 3 {
		t.Fatalf("replaced: %v %v len %d", k, sim, s.Len())
	}
	// Many replacements keep the index bounded.
	for i := range 10000 {
		s.Add(ctx, unit(float64(i)), cache.Key{13})
	}
	if s.Len() != 3 {
		t.Fatalf("len %d after replacements", s.Len())
	}
}

func TestNormalize(t *testing.T) {
	v := []float32{3, 4}
	if err := cache.Normalize(v); err != nil || math.Abs(float64(v[0])-0.6) > 1e-6 {
		t.Fatal(v, err)
	}
	for _, bad := range [][]float32{{0, 0}, {}, {float32(math.NaN())}, {float32(math.Inf(1))}} {
		if cache.Normalize(bad) == nil {
			t.Errorf("%v normalised", bad)
		}
	}
}

func TestContextKeyOf(t *testing.T) {
	const base = `{"model":"m","temperature":0,"messages":[{"role":"system","content":"sys"},{"role":"user","content":"earlier"},{"role":"assistant","content":"reply"},{"role":"user","content":"last question?"}]}`
	k, text, err := cache.ContextKeyOf("acme", openaiReq(t, base))
	if err != nil || text != "last question?" {
		t.Fatal(text, err)
	}
	if k2, text2, _ := cache.ContextKeyOf("acme", openaiReq(t, strings.Replace(base, "last question?", "another one", 1))); k2 != k || text2 != "another one" {
		t.Fatal("the last user turn changed the context key")
	}
	if exact, _ := cache.KeyOf("acme", openaiReq(t, base)); exact == k {
		t.Fatal("a context key equals the exact key")
	}
	for name, body := range map[string]string{
		"system":       strings.Replace(base, `"sys"`, `"sys2"`, 1),
		"earlier turn": strings.Replace(base, "earlier", "before", 1),
		"reply":        strings.Replace(base, `"reply"`, `"other"`, 1),
		"temperature":  strings.Replace(base, `"temperature":0`, `"temperature":0.5`, 1),
		"tools":        strings.Replace(base, `"model"`, `"tools":[{"type":"function","function":{"name":"f"}}],"model"`, 1),
	} {
		if k2, _, _ := cache.ContextKeyOf("acme", openaiReq(t, body)); k2 == k {
			t.Errorf("%s: same context key", name)
		}
	}
	if k2, _, _ := cache.ContextKeyOf("other", openaiReq(t, base)); k2 == k {
		t.Error("two tenants share a context")
	}
	if _, _, err := cache.ContextKeyOf("acme", openaiReq(t, `{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}`)); err == nil {
		t.Error("a request ending with the assistant's turn has a semantic context")
	}
}
