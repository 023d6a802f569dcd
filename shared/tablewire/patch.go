package tablewire

import (
	"slices"
	"strings"
	"time"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Patch converts next, which a leaf delta with change ch made of the
// table prev was converted from, by converting only what ch names: the
// result shares every unchanged list with prev, and the changed lists
// are copied once with their changed entries replaced. ok is false when
// the change is not one Patch handles (not a leaf delta, a route added or
// removed, a route left with no usable target, which changes the models
// the edge serves); convert next with ToTable then. Providers' secrets
// are those resolved for prev: they are resolved afresh by the next
// ToTable (a snapshot, or a change to the fleet or the providers).
func (c *Converter) Patch(prev *table.Table, next *tablev1.RoutingTable, ch Change) (tab *table.Table, tch table.Change, ok bool, err error) {
	if prev == nil || !ch.Leaf || len(ch.DeletedRoutes) > 0 {
		return nil, table.Change{}, false, nil
	}
	e := next.GetEntities()
	out := *prev
	out.Revision = next.GetRevision()
	if len(ch.Routes) > 0 {
		usable := make(map[string]bool, len(prev.Providers))
		for _, p := range prev.Providers {
			usable[p.ID] = true
		}
		out.Routes = slices.Clone(prev.Routes)
		for _, model := range ch.Routes {
			i, found := slices.BinarySearchFunc(out.Routes, model, func(r *table.Route, m string) int { return strings.Compare(r.Model, m) })
			j, inNext := slices.BinarySearchFunc(e.GetRoutes(), model, func(r *controlv1.Route, m string) int { return strings.Compare(r.GetModel(), m) })
			if !found || !inNext {
				return nil, table.Change{}, false, nil
			}
			conv := convertRoute(e.GetRoutes()[j], usable)
			if !conv.ok {
				return nil, table.Change{}, false, nil
			}
			out.Routes[i] = conv.out
		}
		tch.Routes = ch.Routes
	}
	if len(ch.Keys)+len(ch.DeletedKeys) > 0 {
		// The changed keys, converted and sorted (d log d), are merged
		// into the kept ones in one walk: O(K) pointer copies, no sort
		// of the whole list.
		added := make([]*table.Key, 0, len(ch.Keys))
		for _, id := range ch.Keys {
			j, found := slices.BinarySearchFunc(e.GetKeys(), id, func(k *controlv1.Key, id string) int { return strings.Compare(k.GetId(), id) })
			if !found {
				return nil, table.Change{}, false, nil
			}
			k, err := convertKey(e.GetKeys()[j])
			if err != nil {
				return nil, table.Change{}, true, err
			}
			added = append(added, &k)
		}
		slices.SortFunc(added, func(a, b *table.Key) int { return strings.Compare(a.ID, b.ID) })
		gone := slices.Concat(ch.Keys, ch.DeletedKeys)
		slices.Sort(gone)
		keys := make([]*table.Key, 0, len(prev.Keys)+len(added))
		for _, k := range prev.Keys {
			if _, drop := slices.BinarySearch(gone, k.ID); drop {
				continue
			}
			for len(added) > 0 && added[0].ID < k.ID {
				keys, added = append(keys, added[0]), added[1:]
			}
			keys = append(keys, k)
		}
		out.Keys = append(keys, added...)
		tch.Keys, tch.DeletedKeys = ch.Keys, ch.DeletedKeys
	}
	if ids := slices.Concat(ch.TenantStates, ch.DeletedTenantStates); len(ids) > 0 {
		out.Tenants = slices.Clone(prev.Tenants)
		states := e.GetTenantStates()
		for _, id := range ids {
			i, found := slices.BinarySearchFunc(out.Tenants, id, func(t table.Tenant, id string) int { return strings.Compare(t.ID, id) })
			if !found {
				return nil, table.Change{}, false, nil
			}
			tn := &out.Tenants[i]
			tn.Exhausted, tn.ExhaustedUntil = false, time.Time{}
			if j, ok := slices.BinarySearchFunc(states, id, func(s *tablev1.TenantState, id string) int { return strings.Compare(s.GetTenant(), id) }); ok && states[j].GetExhausted() {
				tn.Exhausted, tn.ExhaustedUntil = true, msTime(states[j].GetExhaustedUntilUnixMs())
			}
			tch.Tenants = append(tch.Tenants, id)
		}
	}
	return &out, tch, true, nil
}
