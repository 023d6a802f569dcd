// Package cow holds copy-on-write lookup structures for state that is
// read on the request path while a new revision is built beside it: an
// update costs work proportional to what it changes (amortized), never a
// copy of the whole. Values are immutable once published; this package
// never mutates a published Map and never blocks.
package cow

import "maps"

// Map is an immutable map from K to V: a large shared base and a small
// layer of changes on top. With returns a new Map and leaves the old one
// readable, so readers need no lock. With copies the layer, and folds it
// into a new base once it holds more than √n entries (at least 32), so
// an update of d entries costs O(d + √n) amortized, against O(n) for a
// copy of the whole, and a lookup at most two map reads.
//
// The zero Map is empty and ready to use.
type Map[K comparable, V any] struct {
	base map[K]V
	top  map[K]entry[V] // changes over base; an entry with !ok is a deletion
	n    int            // entries, counting base and top
}

type entry[V any] struct {
	v  V
	ok bool
}

// minLayer is the layer size below which With never folds.
const minLayer = 32

// layerCap is the layer size past which With folds it into a new base:
// √n, at least minLayer. A fold copies n entries once per √n changes,
// and every With copies up to √n: O(√n) per change either way.
func layerCap(n int) int {
	c := minLayer
	for c*c < n {
		c++
	}
	return c
}

// From returns a Map holding m's entries. It takes m over: the caller
// must not modify it afterwards.
func From[K comparable, V any](m map[K]V) Map[K, V] {
	return Map[K, V]{base: m, n: len(m)}
}

// Get returns the value for k.
func (m Map[K, V]) Get(k K) (V, bool) {
	if e, in := m.top[k]; in {
		return e.v, e.ok
	}
	v, ok := m.base[k]
	return v, ok
}

// Len returns the number of entries.
func (m Map[K, V]) Len() int { return m.n }

// Has reports whether k is present.
func (m Map[K, V]) Has(k K) bool {
	_, ok := m.Get(k)
	return ok
}

// With returns m with set's entries added or replaced and del's keys
// removed (a key in both ends up set). m itself is unchanged.
func (m Map[K, V]) With(set map[K]V, del []K) Map[K, V] {
	top := make(map[K]entry[V], len(m.top)+len(set)+len(del))
	maps.Copy(top, m.top)
	n := m.n
	for _, k := range del {
		if _, set := set[k]; set {
			continue
		}
		if m.Has(k) {
			n--
		}
		top[k] = entry[V]{}
	}
	for k, v := range set {
		if !m.Has(k) {
			n++
		}
		top[k] = entry[V]{v: v, ok: true}
	}
	out := Map[K, V]{base: m.base, top: top, n: n}
	if len(top) > layerCap(len(m.base)) {
		out = out.compact()
	}
	return out
}

// compact folds the layer into a new base.
func (m Map[K, V]) compact() Map[K, V] {
	base := make(map[K]V, m.n)
	for k, v := range m.base {
		if _, in := m.top[k]; !in {
			base[k] = v
		}
	}
	for k, e := range m.top {
		if e.ok {
			base[k] = e.v
		}
	}
	return Map[K, V]{base: base, n: len(base)}
}

// All calls yield for every entry, in no particular order, until it
// returns false.
func (m Map[K, V]) All(yield func(K, V) bool) {
	for k, v := range m.base {
		if _, in := m.top[k]; in {
			continue
		}
		if !yield(k, v) {
			return
		}
	}
	for k, e := range m.top {
		if e.ok && !yield(k, e.v) {
			return
		}
	}
}
