package table

import (
	"slices"
	"strings"
)

// Change says how a table differs from the one before it, for Patch:
// the IDs of what changed. Everything it does not name is the same.
type Change struct {
	// Routes are the models whose routes were replaced; each model had
	// a route before and has one now, and the models themselves are
	// unchanged.
	Routes []string
	// Keys are the key IDs added or replaced; DeletedKeys those removed.
	Keys, DeletedKeys []string
	// Tenants are the tenant IDs changed in place (their budget state).
	Tenants []string
}

// Patch compiles next, a table that differs from c's only as ch says,
// checking and indexing only what changed: O(changes) amortized, against
// O(table) for Compile. The result is what Compile(next) would give; when
// next does not fit the shortcut (a changed route that was not there,
// lists out of order, a key hash reused), Patch runs Compile. Like
// Compile it fills presets into next, and the caller must not modify
// next afterwards. c is unchanged. patched is false when Compile ran:
// whatever derives from the table is then to be rebuilt whole too.
func (c *Compiled) Patch(next *Table, ch Change) (out *Compiled, patched bool, err error) {
	out, ok, err := c.patch(next, ch)
	if !ok {
		out, err = Compile(next)
		return out, false, err
	}
	return out, true, err
}

func (c *Compiled) patch(next *Table, ch Change) (*Compiled, bool, error) {
	old := c.table
	if !c.sorted {
		return nil, false, nil
	}
	if len(next.Providers) != len(old.Providers) || len(next.Models) != len(old.Models) ||
		len(next.Regions) != len(old.Regions) || len(next.Nodes) != len(old.Nodes) ||
		len(next.Placements) != len(old.Placements) || len(next.Prices) != len(old.Prices) || len(next.Tenants) != len(old.Tenants) {
		return nil, false, nil
	}
	out := *c
	out.table = next
	out.sorted = true // the unchanged entries kept their order; the changed ones are checked against their neighbours
	// Providers keep their preset defaults: the compiled ones are
	// copied over next's, which are the same providers.
	for i := range next.Providers {
		if next.Providers[i].ID != old.Providers[i].ID {
			return nil, false, nil
		}
		next.Providers[i] = old.Providers[i]
	}
	if len(ch.Routes) > 0 {
		set := make(map[string]*Route, len(ch.Routes))
		for _, model := range ch.Routes {
			i, found := slices.BinarySearchFunc(next.Routes, model, func(r *Route, m string) int { return strings.Compare(r.Model, m) })
			if !found || next.Routes[i] == nil || !inOrder(next.Routes, i, func(r *Route) string { return r.Model }) {
				return nil, false, nil
			}
			if prev, had := c.routes.Get(model); !had || prev.Model != model || !hasRouteFor(old.Routes, model) {
				return nil, false, nil // a route added to a placed model: compile afresh
			}
			if err := c.checkRoute(i, next.Routes[i]); err != nil {
				return nil, true, err
			}
			set[model] = next.Routes[i]
		}
		out.routes = c.routes.With(set, nil)
	}
	if len(ch.Tenants) > 0 {
		set := make(map[string]*Tenant, len(ch.Tenants))
		for _, id := range ch.Tenants {
			i, found := slices.BinarySearchFunc(next.Tenants, id, func(t Tenant, id string) int { return strings.Compare(t.ID, id) })
			if !found || !c.tenants.Has(id) {
				return nil, false, nil
			}
			if err := c.checkTenant(i, &next.Tenants[i]); err != nil {
				return nil, true, err
			}
			set[id] = &next.Tenants[i]
		}
		out.tenants = c.tenants.With(set, nil)
	}
	if len(ch.Keys)+len(ch.DeletedKeys) > 0 {
		var del []string
		for _, id := range slices.Concat(ch.Keys, ch.DeletedKeys) {
			i, found := slices.BinarySearchFunc(old.Keys, id, func(k *Key, id string) int { return strings.Compare(k.ID, id) })
			if !found {
				continue // a new key
			}
			del = append(del, strings.ToLower(strings.TrimPrefix(old.Keys[i].Hash, "sha256:")))
		}
		gone := out.keys.With(nil, del)
		set := make(map[string]*Key, len(ch.Keys))
		for _, id := range ch.Keys {
			i, found := slices.BinarySearchFunc(next.Keys, id, func(k *Key, id string) int { return strings.Compare(k.ID, id) })
			if !found || next.Keys[i] == nil || !inOrder(next.Keys, i, func(k *Key) string { return k.ID }) {
				return nil, false, nil
			}
			norm, err := out.checkKey(i, next.Keys[i])
			if err != nil {
				return nil, true, err
			}
			if _, dup := set[norm]; dup || gone.Has(norm) {
				return nil, false, nil // let Compile name the duplicate
			}
			set[norm] = next.Keys[i]
		}
		out.keys = out.keys.With(set, del)
	}
	return &out, true, nil
}

// hasRouteFor reports whether routes, sorted by model, hold one for model.
func hasRouteFor(routes []*Route, model string) bool {
	_, found := slices.BinarySearchFunc(routes, model, func(r *Route, m string) int { return strings.Compare(r.Model, m) })
	return found
}

// inOrder reports whether list[i]'s ID is above its predecessor's and
// below its successor's.
func inOrder[T any](list []T, i int, id func(T) string) bool {
	return (i == 0 || id(list[i-1]) < id(list[i])) && (i+1 == len(list) || id(list[i]) < id(list[i+1]))
}
