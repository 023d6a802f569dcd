package tablewire

import (
	"fmt"
	"slices"
	"strings"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

// Diff returns the delta that turns old into new: the entities new adds
// or changes, and the IDs it drops. A nil old means an empty table at
// revision 0.
func Diff(old, new *tablev1.RoutingTable) *tablev1.TableDelta {
	oe, ne := old.GetEntities(), new.GetEntities()
	if oe == nil {
		oe = &tablev1.Entities{}
	}
	if ne == nil {
		ne = &tablev1.Entities{}
	}
	d := &tablev1.TableDelta{
		Schema: Schema, PrevRevision: old.GetRevision(), Revision: new.GetRevision(), Epoch: new.GetEpoch(),
		Upserts: &tablev1.Entities{}, Deletes: &tablev1.EntityIDs{},
	}
	for _, k := range kinds {
		k.diff(oe, ne, d.Upserts, d.Deletes)
	}
	return d
}

// ApplyDelta builds the table that d makes of t, leaving t untouched, and
// validates it. It fails with ErrGap when d does not start at t's
// revision, and with ErrInvalid when d deletes an entity t lacks or when
// the result is inconsistent. The result shares unchanged entities with
// t. The caller bounds the result's size (CheckSize): it knows t's size,
// and the result is at most that plus the delta's.
func ApplyDelta(t *tablev1.RoutingTable, d *tablev1.TableDelta) (*tablev1.RoutingTable, error) {
	if err := checkSchema(d.GetSchema()); err != nil {
		return nil, err
	}
	if d.GetPrevRevision() != t.GetRevision() {
		return nil, fmt.Errorf("%w: delta %d→%d, table at %d", ErrGap, d.GetPrevRevision(), d.GetRevision(), t.GetRevision())
	}
	if d.GetEpoch() != t.GetEpoch() {
		return nil, fmt.Errorf("%w: delta in epoch %d, table in epoch %d", ErrGap, d.GetEpoch(), t.GetEpoch())
	}
	if d.GetRevision() <= d.GetPrevRevision() {
		return nil, invalidf("revision", "delta goes from %d to %d; revisions only grow", d.GetPrevRevision(), d.GetRevision())
	}
	base := &tablev1.Entities{}
	if e := t.GetEntities(); e != nil {
		// A shallow copy: the lists are rebuilt below, the entities shared.
		*base = tablev1.Entities{
			Regions: e.Regions, Nodes: e.Nodes, Models: e.Models, Placements: e.Placements,
			Providers: e.Providers, Routes: e.Routes, Keys: e.Keys, Tenants: e.Tenants, Prices: e.Prices,
			TenantStates: e.TenantStates,
		}
	}
	up, del := d.GetUpserts(), d.GetDeletes()
	if up == nil {
		up = &tablev1.Entities{}
	}
	if del == nil {
		del = &tablev1.EntityIDs{}
	}
	for _, k := range kinds {
		if missing := k.apply(base, up, del); len(missing) > 0 {
			return nil, invalidf("deletes."+k.name, "names entities the table lacks: %s", strings.Join(missing, ", "))
		}
	}
	next := &tablev1.RoutingTable{Schema: Schema, Revision: d.GetRevision(), Entities: base,
		ClusterId: t.GetClusterId(), Epoch: t.GetEpoch()}
	if err := Validate(next); err != nil {
		return nil, err
	}
	return next, nil
}

// CheckSize returns t's encoded size, or ErrTooLarge when it is above
// max bytes (0: DefaultMaxBytes).
func CheckSize(t *tablev1.RoutingTable, max int) (int, error) {
	if max <= 0 {
		max = DefaultMaxBytes
	}
	n := Size(t)
	if n > max {
		return n, fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, n, max)
	}
	return n, nil
}

// Change says what a delta changed, for the layers above to patch what
// they derived from the table instead of rebuilding it.
type Change struct {
	// Leaf is true when the delta touches only routes, keys and tenant
	// states: entities nothing else in the table references. Only then
	// are the lists below the whole change; otherwise the table is to be
	// taken as new.
	Leaf bool
	// Routes are the models whose routes the delta adds or replaces;
	// DeletedRoutes those whose routes it removes.
	Routes, DeletedRoutes []string
	// Keys and DeletedKeys are key IDs.
	Keys, DeletedKeys []string
	// TenantStates and DeletedTenantStates are tenant IDs.
	TenantStates, DeletedTenantStates []string
}

// Index is what ApplyDeltaIndexed checks a delta against besides the
// table: where models are placed and which regions hold nodes and
// providers. It is immutable, and shared between the revisions of a
// sequence of leaf deltas.
type Index struct{ ix *index }

// leafKinds are the kinds a leaf delta may touch.
var leafKinds = map[int]bool{kRoutes: true, kKeys: true, kTenantStates: true}

// ApplyDeltaIndexed is ApplyDelta doing work proportional to the delta
// when it can. For a leaf delta (Change.Leaf) it checks only the
// entities the delta upserts, against ix (nil: built from t, O(table)),
// which is valid for t: the rest of the table is unchanged and was
// validated, and nothing references what a leaf delta deletes. The
// changed lists are merged by ApplyDelta's pass (a copy of each changed
// list's pointers). Any other delta goes through ApplyDelta, which
// validates the whole result; the Index returned is then nil, to be built
// when the next leaf delta comes. t must have passed Validate.
func ApplyDeltaIndexed(t *tablev1.RoutingTable, ix *Index, d *tablev1.TableDelta) (*tablev1.RoutingTable, *Index, Change, error) {
	up, del := d.GetUpserts(), d.GetDeletes()
	if up == nil {
		up = &tablev1.Entities{}
	}
	if del == nil {
		del = &tablev1.EntityIDs{}
	}
	leaf := true
	for k, kd := range kinds {
		if !leafKinds[k] && (len(kd.ids(up)) > 0 || len(kd.deleted(del)) > 0) {
			leaf = false
		}
	}
	if !leaf {
		next, err := ApplyDelta(t, d)
		return next, nil, Change{}, err
	}
	if err := checkSchema(d.GetSchema()); err != nil {
		return nil, nil, Change{}, err
	}
	if d.GetPrevRevision() != t.GetRevision() {
		return nil, nil, Change{}, fmt.Errorf("%w: delta %d→%d, table at %d", ErrGap, d.GetPrevRevision(), d.GetRevision(), t.GetRevision())
	}
	if d.GetEpoch() != t.GetEpoch() {
		return nil, nil, Change{}, fmt.Errorf("%w: delta in epoch %d, table in epoch %d", ErrGap, d.GetEpoch(), t.GetEpoch())
	}
	if d.GetRevision() <= d.GetPrevRevision() {
		return nil, nil, Change{}, invalidf("revision", "delta goes from %d to %d; revisions only grow", d.GetPrevRevision(), d.GetRevision())
	}
	// Upserted IDs must be present: the merge keeps the lists sorted and
	// free of repeats, but cannot make an empty ID valid.
	for _, k := range []int{kRoutes, kKeys, kTenantStates} {
		for i, id := range kinds[k].ids(up) {
			if id == "" || id == "/" {
				return nil, nil, Change{}, invalidf(fmt.Sprintf("%s[%d]", kinds[k].name, i), "has no ID")
			}
		}
	}
	if ix == nil {
		e := t.GetEntities()
		if e == nil {
			e = &tablev1.Entities{}
		}
		built, err := buildIndex(e)
		if err != nil {
			return nil, nil, Change{}, err
		}
		ix = &Index{built}
	}
	base := &tablev1.Entities{}
	if e := t.GetEntities(); e != nil {
		*base = tablev1.Entities{
			Regions: e.Regions, Nodes: e.Nodes, Models: e.Models, Placements: e.Placements,
			Providers: e.Providers, Routes: e.Routes, Keys: e.Keys, Tenants: e.Tenants, Prices: e.Prices,
			TenantStates: e.TenantStates,
		}
	}
	for _, k := range []int{kRoutes, kKeys, kTenantStates} {
		if missing := kinds[k].apply(base, up, del); len(missing) > 0 {
			return nil, nil, Change{}, invalidf("deletes."+kinds[k].name, "names entities the table lacks: %s", strings.Join(missing, ", "))
		}
	}
	// Of repeated upserts the last wins: check what the table now holds.
	routes, keys, states := uniq(kinds[kRoutes].ids(up)), uniq(kinds[kKeys].ids(up)), uniq(kinds[kTenantStates].ids(up))
	for _, id := range routes {
		i, _ := slices.BinarySearchFunc(base.Routes, id, func(r *controlv1.Route, id string) int { return strings.Compare(r.GetModel(), id) })
		if err := ix.ix.checkRoute(base, base.Routes[i]); err != nil {
			return nil, nil, Change{}, err
		}
	}
	for _, id := range keys {
		i, _ := slices.BinarySearchFunc(base.Keys, id, func(k *controlv1.Key, id string) int { return strings.Compare(k.GetId(), id) })
		if err := checkKey(base, base.Keys[i]); err != nil {
			return nil, nil, Change{}, err
		}
	}
	for _, id := range states {
		i, _ := slices.BinarySearchFunc(base.TenantStates, id, func(s *tablev1.TenantState, id string) int { return strings.Compare(s.GetTenant(), id) })
		if err := checkTenantState(base, base.TenantStates[i]); err != nil {
			return nil, nil, Change{}, err
		}
	}
	next := &tablev1.RoutingTable{Schema: Schema, Revision: d.GetRevision(), Entities: base,
		ClusterId: t.GetClusterId(), Epoch: t.GetEpoch()}
	ch := Change{Leaf: true,
		Routes: routes, DeletedRoutes: without(uniq(del.GetRoutes()), routes),
		Keys: keys, DeletedKeys: without(uniq(del.GetKeys()), keys),
		TenantStates: states, DeletedTenantStates: without(uniq(del.GetTenantStates()), states),
	}
	return next, ix, ch, nil
}

// uniq returns ids sorted and without repeats, in a new slice.
func uniq(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	return slices.Compact(slices.Sorted(slices.Values(ids)))
}

// without returns the sorted ids not in the sorted drop: a delete and an
// upsert of one ID is an upsert.
func without(ids, drop []string) []string {
	out := ids[:0]
	for _, id := range ids {
		if _, found := slices.BinarySearch(drop, id); !found {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
