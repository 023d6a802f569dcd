package tablewire

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

// kind is one entity list of a table, handled without knowing its type.
type kind struct {
	name string
	// sort orders the list by ID.
	sort func(*tablev1.Entities)
	// ids returns the IDs in the list, in list order.
	ids func(*tablev1.Entities) []string
	// sorted returns the index of the first entity whose ID is empty or
	// not above the one before it, or -1 when the list is in order.
	sorted func(*tablev1.Entities) int
	// has reports whether the (sorted) list holds id.
	has func(e *tablev1.Entities, id string) bool
	// diff adds to up and del what turns old's list into new's.
	diff func(old, new *tablev1.Entities, up *tablev1.Entities, del *tablev1.EntityIDs)
	// apply upserts up's entities into base's list and removes del's
	// IDs; it returns the IDs it could not find to delete.
	apply func(base, up *tablev1.Entities, del *tablev1.EntityIDs) (missing []string)
	// deleted returns del's IDs of this kind.
	deleted func(*tablev1.EntityIDs) []string
}

func listKind[T proto.Message](name string, list func(*tablev1.Entities) *[]T, dels func(*tablev1.EntityIDs) *[]string, id func(T) string) kind {
	cmp := func(a, b T) int { return strings.Compare(id(a), id(b)) }
	return kind{
		name: name,
		sort: func(e *tablev1.Entities) { slices.SortFunc(*list(e), cmp) },
		sorted: func(e *tablev1.Entities) int {
			l := *list(e)
			for i, m := range l {
				k := id(m)
				if k == "" || k == "/" || i > 0 && id(l[i-1]) >= k {
					return i
				}
			}
			return -1
		},
		has: func(e *tablev1.Entities, k string) bool {
			_, ok := slices.BinarySearchFunc(*list(e), k, func(m T, k string) int { return strings.Compare(id(m), k) })
			return ok
		},
		ids: func(e *tablev1.Entities) []string {
			out := make([]string, 0, len(*list(e)))
			for _, m := range *list(e) {
				out = append(out, id(m))
			}
			return out
		},
		diff: func(old, new, up *tablev1.Entities, del *tablev1.EntityIDs) {
			prev := make(map[string]T, len(*list(old)))
			for _, m := range *list(old) {
				prev[id(m)] = m
			}
			for _, m := range *list(new) {
				p, ok := prev[id(m)]
				// States share unchanged entities, so most compare by
				// pointer before any field is read.
				if !ok || (any(p) != any(m) && !proto.Equal(p, m)) {
					*list(up) = append(*list(up), m)
				}
				delete(prev, id(m))
			}
			for k := range prev {
				*dels(del) = append(*dels(del), k)
			}
			slices.Sort(*dels(del))
		},
		apply: func(base, up *tablev1.Entities, del *tablev1.EntityIDs) []string {
			ups, gone := *list(up), *dels(del)
			if len(ups) == 0 && len(gone) == 0 {
				return nil // the list is shared with the old table
			}
			// The base list is sorted (Validate checks it), so one merge
			// pass applies the delta: no map, no sort of the whole list.
			ups = slices.Clone(ups)
			slices.SortStableFunc(ups, cmp)
			// Of repeated upserts the last wins.
			last := ups[:0]
			for k, m := range ups {
				if k+1 < len(ups) && id(ups[k+1]) == id(m) {
					continue
				}
				last = append(last, m)
			}
			ups = last
			gone = slices.Sorted(slices.Values(gone))
			old := *list(base)
			var missing []string
			for _, k := range gone {
				if _, ok := slices.BinarySearchFunc(old, k, func(m T, k string) int { return strings.Compare(id(m), k) }); !ok {
					missing = append(missing, k)
				}
			}
			out := make([]T, 0, len(old)+len(ups))
			i, j, g := 0, 0, 0
			for i < len(old) || j < len(ups) {
				var c int
				switch {
				case j == len(ups):
					c = -1
				case i == len(old):
					c = 1
				default:
					c = strings.Compare(id(old[i]), id(ups[j]))
				}
				switch {
				case c < 0:
					k := id(old[i])
					for g < len(gone) && gone[g] < k {
						g++
					}
					if g == len(gone) || gone[g] != k {
						out = append(out, old[i])
					}
					i++
				case c > 0:
					out = append(out, ups[j])
					j++
				default:
					out = append(out, ups[j]) // a delete and an upsert: the upsert wins
					i++
					j++
				}
			}
			*list(base) = out
			return missing
		},
		deleted: func(d *tablev1.EntityIDs) []string { return *dels(d) },
	}
}

// PriceID is a price's ID, "provider/model", as the control plane keys it.
func PriceID(p *controlv1.Price) string { return p.GetProvider() + "/" + p.GetModel() }

// Indexes into kinds.
const (
	kRegions = iota
	kNodes
	kModels
	kPlacements
	kProviders
	kRoutes
	kKeys
	kTenants
	kPrices
	kTenantStates
)

// kinds lists every entity kind of a table, in dependency order.
var kinds = []kind{
	listKind("regions", func(e *tablev1.Entities) *[]*controlv1.Region { return &e.Regions },
		func(d *tablev1.EntityIDs) *[]string { return &d.Regions }, (*controlv1.Region).GetId),
	listKind("nodes", func(e *tablev1.Entities) *[]*controlv1.Node { return &e.Nodes },
		func(d *tablev1.EntityIDs) *[]string { return &d.Nodes }, (*controlv1.Node).GetId),
	listKind("models", func(e *tablev1.Entities) *[]*controlv1.Model { return &e.Models },
		func(d *tablev1.EntityIDs) *[]string { return &d.Models }, (*controlv1.Model).GetId),
	listKind("placements", func(e *tablev1.Entities) *[]*controlv1.Placement { return &e.Placements },
		func(d *tablev1.EntityIDs) *[]string { return &d.Placements }, (*controlv1.Placement).GetId),
	listKind("providers", func(e *tablev1.Entities) *[]*controlv1.Provider { return &e.Providers },
		func(d *tablev1.EntityIDs) *[]string { return &d.Providers }, (*controlv1.Provider).GetId),
	listKind("routes", func(e *tablev1.Entities) *[]*controlv1.Route { return &e.Routes },
		func(d *tablev1.EntityIDs) *[]string { return &d.Routes }, (*controlv1.Route).GetModel),
	listKind("keys", func(e *tablev1.Entities) *[]*controlv1.Key { return &e.Keys },
		func(d *tablev1.EntityIDs) *[]string { return &d.Keys }, (*controlv1.Key).GetId),
	listKind("tenants", func(e *tablev1.Entities) *[]*controlv1.Tenant { return &e.Tenants },
		func(d *tablev1.EntityIDs) *[]string { return &d.Tenants }, (*controlv1.Tenant).GetId),
	listKind("prices", func(e *tablev1.Entities) *[]*controlv1.Price { return &e.Prices },
		func(d *tablev1.EntityIDs) *[]string { return &d.Prices }, PriceID),
	listKind("tenant_states", func(e *tablev1.Entities) *[]*tablev1.TenantState { return &e.TenantStates },
		func(d *tablev1.EntityIDs) *[]string { return &d.TenantStates }, (*tablev1.TenantState).GetTenant),
}

// Sort orders every list in e by ID, the order a table is encoded in, so
// the same entities always encode to the same bytes.
func Sort(e *tablev1.Entities) {
	for _, k := range kinds {
		k.sort(e)
	}
}
