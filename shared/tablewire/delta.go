package tablewire

import (
	"fmt"
	"strings"

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
