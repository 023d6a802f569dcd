package tablewire

import (
	"fmt"
	"slices"
	"strings"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Validate checks a table's own consistency: its schema, IDs present,
// unique and sorted in every list, every reference resolving (nodes to
// regions, placements to models and nodes or regions, routes to models,
// providers and regions, keys to tenants, prices to models and
// providers), and every routed model having at least one possible target.
// A target is possible when its provider exists and, for the local
// engine, the model is placed somewhere.
//
// It also refuses what could never route, so the control plane refuses
// the write that would make it (control/api) rather than publishing a
// table that serves nothing:
//   - an allowed_regions list (route, model or tenant) none of whose
//     regions holds a node or a provider with that region;
//   - a route whose allowed regions hold none of its providers' regions
//     and none of the regions the model is placed in;
//   - a placement by region whose region holds no node;
//   - a placement of a model without a local source.
//
// Field-level checks of providers, models and keys belong to
// shared/table, which the edge runs on the converted table (ToTable).
func Validate(t *tablev1.RoutingTable) error {
	if t == nil {
		return fmt.Errorf("%w: no table", ErrInvalid)
	}
	if err := checkSchema(t.GetSchema()); err != nil {
		return err
	}
	if t.GetRevision() == 0 {
		return invalidf("revision", "must be positive")
	}
	e := t.GetEntities()
	if e == nil {
		e = &tablev1.Entities{}
	}
	// Lists are checked sorted first, so lookups are binary searches:
	// no maps to build for a table that changes one route at a time.
	for _, k := range kinds {
		if i := k.sorted(e); i >= 0 {
			ids := k.ids(e)
			if ids[i] == "" || ids[i] == "/" {
				return invalidf(fmt.Sprintf("%s[%d]", k.name, i), "has no ID")
			}
			return invalidf(fmt.Sprintf("%s[%d]", k.name, i), "%q is out of order or repeated", ids[i])
		}
	}
	ix, err := buildIndex(e)
	if err != nil {
		return err
	}
	for _, m := range e.GetModels() {
		if err := ix.servable(e, func() string { return "models[" + m.GetId() + "].allowed_regions" }, m.GetAllowedRegions()); err != nil {
			return err
		}
	}
	for _, tn := range e.GetTenants() {
		if err := ix.servable(e, func() string { return "tenants[" + tn.GetId() + "].allowed_regions" }, tn.GetAllowedRegions()); err != nil {
			return err
		}
	}
	for _, r := range e.GetRoutes() {
		if err := ix.checkRoute(e, r); err != nil {
			return err
		}
	}
	for _, k := range e.GetKeys() {
		if err := checkKey(e, k); err != nil {
			return err
		}
	}
	for _, ts := range e.GetTenantStates() {
		if err := checkTenantState(e, ts); err != nil {
			return err
		}
	}
	for _, p := range e.GetPrices() {
		if !has(e, kModels, p.GetModel()) {
			return invalidf("prices["+PriceID(p)+"].model", "references unknown model %q", p.GetModel())
		}
		if !has(e, kProviders, p.GetProvider()) {
			return invalidf("prices["+PriceID(p)+"].provider", "references unknown provider %q", p.GetProvider())
		}
	}
	return nil
}

func has(e *tablev1.Entities, k int, id string) bool { return kinds[k].has(e, id) }

// index is what checking a route needs beyond binary searches in the
// table's sorted lists: where models are placed and which regions hold
// a node or a provider. It depends only on regions, nodes, models,
// placements and providers, so a delta that changes none of them keeps
// it (ApplyDeltaIndexed). It is immutable once built.
type index struct {
	// placed holds the placed models; placedIn, per placed model, the
	// regions of the nodes or the regions it is placed on.
	placed   map[string]bool
	placedIn map[string][]string
	// withNode and withProvider hold the regions with a node, and
	// with a provider.
	withNode, withProvider map[string]bool
}

// buildIndex checks the fleet's references (nodes to regions, placements
// to models, nodes and regions) and indexes them. The lists are sorted.
func buildIndex(e *tablev1.Entities) (*index, error) {
	nodes, providers := e.GetNodes(), e.GetProviders()
	ix := &index{placed: map[string]bool{}, placedIn: map[string][]string{},
		withNode: make(map[string]bool, len(nodes)), withProvider: make(map[string]bool, len(providers))}
	for _, n := range nodes {
		if !has(e, kRegions, n.GetRegion()) {
			return nil, invalidf("nodes["+n.GetId()+"].region", "references unknown region %q", n.GetRegion())
		}
		ix.withNode[n.GetRegion()] = true
	}
	for _, p := range providers {
		ix.withProvider[p.GetRegion()] = p.GetRegion() != ""
	}
	for _, p := range e.GetPlacements() {
		f := func() string { return "placements[" + p.GetId() + "]" }
		m := findModel(e, p.GetModel())
		if m == nil {
			return nil, invalidf(f()+".model", "references unknown model %q", p.GetModel())
		}
		if !m.GetLocal() || m.GetGguf() == "" && m.GetOllama() == "" {
			return nil, invalidf(f()+".model", "model %q has no local source (local with gguf or ollama), so no node can run it", p.GetModel())
		}
		region := p.GetRegion()
		switch {
		case p.GetNode() != "" && p.GetRegion() != "", p.GetNode() == "" && p.GetRegion() == "":
			return nil, invalidf(f(), "names a node or a region, exactly one")
		case p.GetNode() != "" && !has(e, kNodes, p.GetNode()):
			return nil, invalidf(f()+".node", "references unknown node %q", p.GetNode())
		case p.GetRegion() != "" && !has(e, kRegions, p.GetRegion()):
			return nil, invalidf(f()+".region", "references unknown region %q", p.GetRegion())
		case p.GetRegion() != "":
			if !ix.withNode[p.GetRegion()] {
				return nil, invalidf(f()+".region", "region %q holds no node, so the model would run nowhere", p.GetRegion())
			}
		default:
			i, _ := slices.BinarySearchFunc(nodes, p.GetNode(), func(n *controlv1.Node, id string) int { return strings.Compare(n.GetId(), id) })
			region = nodes[i].GetRegion()
		}
		ix.placed[p.GetModel()] = true
		ix.placedIn[p.GetModel()] = append(ix.placedIn[p.GetModel()], region)
	}
	return ix, nil
}

func findModel(e *tablev1.Entities, id string) *controlv1.Model {
	models := e.GetModels()
	i, ok := slices.BinarySearchFunc(models, id, func(m *controlv1.Model, id string) int { return strings.Compare(m.GetId(), id) })
	if !ok {
		return nil
	}
	return models[i]
}

func findProvider(e *tablev1.Entities, id string) *controlv1.Provider {
	providers := e.GetProviders()
	i, ok := slices.BinarySearchFunc(providers, id, func(p *controlv1.Provider, id string) int { return strings.Compare(p.GetId(), id) })
	if !ok {
		return nil
	}
	return providers[i]
}

// servable refuses an allowed-regions list none of whose regions holds a
// node or a provider: nothing could serve under it.
func (ix *index) servable(e *tablev1.Entities, field func() string, regions []string) error {
	for i, reg := range regions {
		if !has(e, kRegions, reg) {
			return invalidf(fmt.Sprintf("%s[%d]", field(), i), "references unknown region %q", reg)
		}
	}
	if len(regions) == 0 {
		return nil
	}
	for _, reg := range regions {
		if ix.withNode[reg] || ix.withProvider[reg] {
			return nil
		}
	}
	return invalidf(field(), "no node or provider is in any of the regions %s, so nothing could ever serve under it", strings.Join(regions, ", "))
}

// checkRoute checks one route against the table: its model, its
// targets' providers, a possible target, and its allowed regions.
func (ix *index) checkRoute(e *tablev1.Entities, r *controlv1.Route) error {
	f := func() string { return "routes[" + r.GetModel() + "]" }
	if findModel(e, r.GetModel()) == nil {
		return invalidf(f()+".model", "references unknown model %q", r.GetModel())
	}
	if len(r.GetTargets()) == 0 {
		return invalidf(f()+".targets", "needs at least one target")
	}
	possible := false
	allowed := r.GetAllowedRegions()
	// inside: some target or placed copy serves within allowed.
	inside := len(allowed) == 0 || slices.ContainsFunc(ix.placedIn[r.GetModel()], func(reg string) bool { return slices.Contains(allowed, reg) })
	for li, ts := range [2][]*controlv1.Target{r.GetTargets(), r.GetFallbacks()} {
		for i, tg := range ts {
			p := findProvider(e, tg.GetProvider())
			if p == nil {
				return invalidf(fmt.Sprintf("%s.%s[%d].provider", f(), [2]string{"targets", "fallbacks"}[li], i), "references unknown provider %q", tg.GetProvider())
			}
			if providerKind(p) != table.KindLocal || ix.placed[modelOf(r, tg)] {
				possible = true
			}
			inside = inside || p.GetRegion() != "" && slices.Contains(allowed, p.GetRegion())
		}
	}
	if !possible {
		return invalidf(f(), "has no possible target: its only targets are the local engine and the model is placed nowhere")
	}
	if err := ix.servable(e, func() string { return f() + ".allowed_regions" }, allowed); err != nil {
		return err
	}
	if !inside {
		return invalidf(f()+".allowed_regions", "none of its providers serves in %s (a provider without a region never does), and model %q is placed on no node there, so the route could never serve a request",
			strings.Join(allowed, ", "), r.GetModel())
	}
	return nil
}

func checkKey(e *tablev1.Entities, k *controlv1.Key) error {
	if k.GetTenant() != "" && !has(e, kTenants, k.GetTenant()) {
		return invalidf("keys["+k.GetId()+"].tenant", "references unknown tenant %q", k.GetTenant())
	}
	return nil
}

func checkTenantState(e *tablev1.Entities, ts *tablev1.TenantState) error {
	if !has(e, kTenants, ts.GetTenant()) {
		return invalidf("tenant_states["+ts.GetTenant()+"]", "references unknown tenant %q", ts.GetTenant())
	}
	return nil
}

// providerKind is a provider's wire format, from its kind or its preset.
func providerKind(p *controlv1.Provider) string {
	if p.GetKind() != "" {
		return p.GetKind()
	}
	return table.Presets[p.GetPreset()].Kind
}

// modelOf is the model a target runs: its own name, or the route's.
func modelOf(r *controlv1.Route, t *controlv1.Target) string {
	if t.GetModel() != "" {
		return t.GetModel()
	}
	return r.GetModel()
}

// FieldError is a validation failure naming the offending field, such as
// "routes[gpt-4o].targets[1].provider".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func invalidf(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
