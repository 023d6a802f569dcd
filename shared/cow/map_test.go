package cow

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestMapMatchesPlainMap applies random changes to a Map and to a plain
// map copied at every step, and checks every version stays as it was
// made: a later With never shows through an earlier Map.
func TestMapMatchesPlainMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ref := map[string]int{}
	for i := range 300 {
		ref[fmt.Sprint(i)] = i
	}
	init := map[string]int{}
	for k, v := range ref {
		init[k] = v
	}
	m := From(init)
	type version struct {
		m   Map[string, int]
		ref map[string]int
	}
	var versions []version
	for step := range 500 {
		set, del := map[string]int{}, []string(nil)
		for range rng.IntN(5) {
			set[fmt.Sprint(rng.IntN(400))] = step
		}
		for range rng.IntN(4) {
			del = append(del, fmt.Sprint(rng.IntN(400)))
		}
		m = m.With(set, del)
		next := map[string]int{}
		for k, v := range ref {
			next[k] = v
		}
		for _, k := range del {
			delete(next, k)
		}
		for k, v := range set {
			next[k] = v
		}
		ref = next
		versions = append(versions, version{m, ref})
	}
	for i, v := range versions {
		if v.m.Len() != len(v.ref) {
			t.Fatalf("version %d: Len %d, want %d", i, v.m.Len(), len(v.ref))
		}
		for k := range 400 {
			key := fmt.Sprint(k)
			got, ok := v.m.Get(key)
			want, wok := v.ref[key]
			if ok != wok || got != want {
				t.Fatalf("version %d key %s: got %d,%v want %d,%v", i, key, got, ok, want, wok)
			}
		}
		n := 0
		v.m.All(func(k string, val int) bool {
			n++
			if v.ref[k] != val {
				t.Fatalf("version %d: All gave %s=%d, want %d", i, k, val, v.ref[k])
			}
			return true
		})
		if n != len(v.ref) {
			t.Fatalf("version %d: All gave %d entries, want %d", i, n, len(v.ref))
		}
	}
}

func TestZeroMap(t *testing.T) {
	var m Map[string, int]
	if _, ok := m.Get("x"); ok || m.Len() != 0 {
		t.Fatal("zero Map not empty")
	}
	m2 := m.With(map[string]int{"x": 1}, []string{"y"})
	if v, ok := m2.Get("x"); !ok || v != 1 || m2.Len() != 1 || m.Len() != 0 {
		t.Fatal("With on the zero Map")
	}
}
