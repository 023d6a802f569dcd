package tablewire

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// maxSecretFile bounds a secret file read for a secret_ref, bytes.
const maxSecretFile = 64 << 10

// Resolver reads the credentials that providers' secret_refs name, on the
// edge that uses them.
type Resolver struct {
	// Policy bounds the refs this edge resolves (secretref.go); a ref
	// outside it is unusable, whatever the table says. The zero value is
	// the defaults.
	Policy SecretPolicy
	// Getenv reads "env:NAME" refs. Nil means os.Getenv.
	Getenv func(string) string
	// ReadFile reads "file:/path" refs, once Policy allowed them. Nil
	// means reading the file, up to 64 KiB, through an os.Root on the
	// secrets directory, so symlinks cannot lead out of it.
	ReadFile func(string) ([]byte, error)
	// LocalEngine says whether this edge runs a local engine. Where it
	// runs none, providers of kind local are unusable.
	LocalEngine bool

	// anyRef skips Policy: CompileEdge's placeholder resolver, which
	// reads nothing (the control plane checks refs itself, with its own
	// policy: CheckSecretRefs).
	anyRef bool
}

// errUnresolved explains a ref that did not resolve without naming it:
// the ref says where a credential lives, which stays out of logs too.
var errUnresolved = errors.New("its secret_ref did not resolve on this edge")

func (r Resolver) resolve(ref string) (table.Secret, error) {
	if err := r.Policy.Check(ref); err != nil && !r.anyRef {
		return "", fmt.Errorf("%w (%v)", errUnresolved, err)
	}
	switch {
	case ref == "":
		return "", nil
	case strings.HasPrefix(ref, "env:"):
		getenv := r.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		v := strings.TrimSpace(getenv(ref[len("env:"):]))
		if v == "" {
			return "", fmt.Errorf("%w (environment variable not set)", errUnresolved)
		}
		return table.Secret(v), nil
	case strings.HasPrefix(ref, "file:/"):
		read := r.ReadFile
		if read == nil {
			read = r.Policy.readSecretFile
		}
		b, err := read(ref[len("file:"):])
		if err != nil {
			return "", fmt.Errorf("%w (file not readable)", errUnresolved)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%w (file empty)", errUnresolved)
		}
		return table.Secret(v), nil
	}
	return "", fmt.Errorf("%w (not env: or file:)", errUnresolved)
}

// CheckEdge converts t as an edge would, every secret assumed present and
// a local engine assumed running, and runs shared/table's validation on
// the result: a table that passes is one every edge with its secrets
// accepts.
func CheckEdge(t *tablev1.RoutingTable) error {
	_, err := CompileEdge(t)
	return err
}

// CompileEdge is CheckEdge returning the compiled table, for the control
// plane to read what every edge will compute from it, such as the nodes
// a placement resolves to (table.Compiled.PlacedOn). Its providers hold
// placeholder credentials.
func CompileEdge(t *tablev1.RoutingTable) (*table.Compiled, error) {
	tab, _, err := ToTable(t, Resolver{
		Getenv:      func(string) string { return "placeholder" },
		ReadFile:    func(string) ([]byte, error) { return []byte("placeholder"), nil },
		LocalEngine: true,
		anyRef:      true,
	})
	var c *table.Compiled
	if err == nil {
		c, err = table.Compile(tab)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the edge's table check: %w", ErrInvalid, err)
	}
	return c, nil
}

// ToTable converts a validated RoutingTable into the edge's table.Table,
// resolving each provider's secret_ref through r. It does not run
// shared/table's validation: the gateway does when the table is applied
// (gateway.SetTable), and the compiler runs it before publishing
// (CheckEdge), so the work is not done twice on every edge.
//
// What the edge serves from a table:
//   - every provider whose secret resolves; a provider whose secret does
//     not is unusable on this edge: it is left out, with the reason in
//     the returned list ("openai: its secret_ref did not resolve …"),
//     and so are its targets. The rest of the table still applies, so
//     key revocations and other changes reach this edge regardless;
//   - every model with a route or a placement: the route's targets
//     followed by its fallbacks, with its strategy, allowed regions and
//     price cap, for edge/router. A model whose targets are all unusable
//     here and that is placed nowhere is not served;
//   - the fleet: regions, nodes, placements, prices and tenants;
//   - every key hash, with its tenant.
func ToTable(t *tablev1.RoutingTable, r Resolver) (tab *table.Table, unusable []string, err error) {
	return NewConverter(r).ToTable(t)
}

// Converter converts one edge's successive tables. It remembers the
// routes it converted last, so a table that shares most of its entities
// with the previous one (as a delta's result does) converts in a pointer
// comparison per unchanged route. It is not safe for concurrent use.
type Converter struct {
	r      Resolver
	prev   []converted // by route model, sorted
	spare  []converted // the list before prev, reused for the next
	usable string      // the usable providers prev was converted with

	// models is the last table's model list, shared with the next table
	// when it is the same (tables never modify it); scratch is where the
	// next list is built to compare.
	models, scratch []table.Model
}

// converted is one route's conversion; ok is false when no target was
// usable.
type converted struct {
	src *controlv1.Route
	out *table.Route // shared by every table converted while src is unchanged
	ok  bool
}

// NewConverter returns a Converter resolving secrets through r.
func NewConverter(r Resolver) *Converter { return &Converter{r: r} }

// ToTable converts t; see the package function ToTable.
func (c *Converter) ToTable(t *tablev1.RoutingTable) (tab *table.Table, unusable []string, err error) {
	e := t.GetEntities()
	tab = &table.Table{Revision: t.GetRevision()}
	usable := map[string]bool{}
	var usableKey strings.Builder
	for _, p := range e.GetProviders() {
		if providerKind(p) == table.KindLocal && !c.r.LocalEngine {
			unusable = append(unusable, p.GetId()+": this edge runs no local engine")
			continue
		}
		key, rerr := c.r.resolve(p.GetSecretRef())
		if rerr != nil {
			unusable = append(unusable, p.GetId()+": "+rerr.Error())
			continue
		}
		tp := table.Provider{
			ID: p.GetId(), Preset: p.GetPreset(), Kind: p.GetKind(), BaseURL: p.GetBaseUrl(), APIKey: key, Region: p.GetRegion(),
			APIVersion: p.GetApiVersion(), Project: p.GetProject(), CloudRegion: p.GetCloudRegion(), Auth: p.GetAuth(),
		}
		if ref := p.GetSecretRef(); tp.Auth == table.AuthEntra && strings.HasPrefix(ref, "file:/") && c.r.ReadFile == nil && !c.r.anyRef {
			// An Entra token expires within hours; whatever renews it
			// rewrites the file, which the adapter reads again. The
			// path passed the policy in resolve.
			tp.TokenFile = ref[len("file:"):]
		}
		tab.Providers = append(tab.Providers, tp)
		usable[p.GetId()] = true
		usableKey.WriteString(p.GetId())
		usableKey.WriteByte(0)
	}
	prev := c.prev
	if usableKey.String() != c.usable {
		prev = nil // another set of usable providers: convert afresh
	}
	routes := e.GetRoutes()
	// The list before prev is garbage once next is built: reuse it.
	conv := slices.Grow(c.spare[:0], len(routes))[:len(routes)]
	pi := 0
	for i, rt := range routes {
		for pi < len(prev) && prev[pi].src.GetModel() < rt.GetModel() {
			pi++
		}
		if pi < len(prev) && prev[pi].src == rt {
			conv[i] = prev[pi]
			continue
		}
		conv[i] = convertRoute(rt, usable)
	}
	c.prev, c.spare, c.usable = conv, c.prev, usableKey.String()
	clear(c.spare) // drop references to the entities it held

	c.fleet(e, tab)
	placed := make(map[string]bool, len(e.GetPlacements()))
	for _, p := range e.GetPlacements() {
		placed[p.GetModel()] = true
	}
	// Models and routes are both sorted by model ID: one walk pairs them.
	models := c.scratch[:0]
	tab.Routes = make([]*table.Route, 0, len(routes))
	ri := 0
	for _, m := range e.GetModels() {
		for ri < len(routes) && routes[ri].GetModel() < m.GetId() {
			ri++
		}
		routed := ri < len(routes) && routes[ri].GetModel() == m.GetId()
		isPlaced := placed[m.GetId()] && m.GetLocal()
		if !isPlaced && (!routed || !conv[ri].ok) {
			continue
		}
		models = append(models, convertModel(m))
		if routed {
			tab.Routes = append(tab.Routes, conv[ri].out)
		}
	}
	if c.models != nil && slices.EqualFunc(models, c.models, sameModel) {
		tab.Models, c.scratch = c.models, models // the scratch stays ours
	} else {
		tab.Models, c.models, c.scratch = models, models, nil // the table owns it now
	}
	// One backing array for every key: a table holds them by pointer
	// (see table.Table.Keys) at the cost of one allocation, not one each.
	keys := make([]table.Key, len(e.GetKeys()))
	tab.Keys = make([]*table.Key, len(keys))
	for i, k := range e.GetKeys() {
		key, err := convertKey(k)
		if err != nil {
			return nil, nil, err
		}
		keys[i] = key
		tab.Keys[i] = &keys[i]
	}
	return tab, unusable, nil
}

// convertKey is one key for the edge.
func convertKey(k *controlv1.Key) (table.Key, error) {
	key := table.Key{ID: k.GetId(), Hash: k.GetHash(), Tenant: k.GetTenant(), AllowedModels: k.GetAllowedModels(), AllowedRegions: k.GetAllowedRegions(),
		RPM: int64(k.GetRpm()), TPM: int64(k.GetTpm()), Disabled: k.GetDisabled()}
	if at := k.GetExpiresAt(); at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return table.Key{}, fmt.Errorf("keys[%s].expires_at: %w", k.GetId(), err)
		}
		key.ExpiresAt = t
	}
	return key, nil
}

// convertRoute is one route for the edge: its targets, then its
// fallbacks, those on usable providers, without repeats.
func convertRoute(rt *controlv1.Route, usable map[string]bool) converted {
	out := &table.Route{
		Model: rt.GetModel(), Strategy: rt.GetStrategy(), AllowedRegions: rt.GetAllowedRegions(), MaxPrice: rt.GetMaxPrice(),
		Cache:   cachePolicy(rt.GetCacheMode(), rt.GetCacheTtlSeconds(), rt.GetCacheSimilarity()),
		Targets: make([]table.Target, 0, len(rt.GetTargets())+len(rt.GetFallbacks())),
	}
	for _, ts := range [2][]*controlv1.Target{rt.GetTargets(), rt.GetFallbacks()} {
		for _, tg := range ts {
			target := table.Target{Provider: tg.GetProvider(), Model: tg.GetModel(), Weight: int(tg.GetWeight())}
			if usable[target.Provider] && !slices.ContainsFunc(out.Targets, func(t table.Target) bool {
				return t.Provider == target.Provider && t.Model == target.Model
			}) {
				out.Targets = append(out.Targets, target)
			}
		}
	}
	return converted{src: rt, out: out, ok: len(out.Targets) > 0}
}

// convertModel is a model for the edge. Slices are shared, not copied:
// neither side modifies them.
func convertModel(m *controlv1.Model) table.Model {
	out := table.Model{
		ID: m.GetId(), OwnedBy: m.GetOwnedBy(), Capabilities: m.GetCapabilities(),
		ContextLength: int(m.GetContextLength()), AllowedRegions: m.GetAllowedRegions(),
	}
	if m.GetLocal() {
		src := &table.LocalSource{Quantization: m.GetQuantization(), Ollama: m.GetOllama()}
		if g := m.GetGguf(); g != "" {
			// A file: URL is a path on the edge; an http(s) URL is
			// fetched by the edge (edge/engine) into its data dir.
			if u, err := url.Parse(g); err == nil && u.Scheme == "file" {
				src.GGUF = u.Path
			} else {
				src.GGUF = g
			}
		}
		out.Local = src
	}
	return out
}

// fleet copies regions, nodes, placements, prices and tenants.
func (c *Converter) fleet(e *tablev1.Entities, tab *table.Table) {
	for _, r := range e.GetRegions() {
		tab.Regions = append(tab.Regions, table.Region{ID: r.GetId(), Latitude: r.GetLatitude(), Longitude: r.GetLongitude()})
	}
	for _, n := range e.GetNodes() {
		tab.Nodes = append(tab.Nodes, table.Node{ID: n.GetId(), Region: n.GetRegion(), Revoked: n.GetRevoked(), Joined: msTime(n.GetJoinedUnixMs())})
	}
	for _, p := range e.GetPlacements() {
		tab.Placements = append(tab.Placements, table.Placement{Model: p.GetModel(), Node: p.GetNode(), Region: p.GetRegion(), Desired: int(p.GetDesired())})
	}
	for _, p := range e.GetPrices() {
		tab.Prices = append(tab.Prices, table.Price{Provider: p.GetProvider(), Model: p.GetModel(), Input: p.GetInput(), Output: p.GetOutput(), Cached: p.GetCached(),
			BatchInput: p.GetBatchInput(), BatchOutput: p.GetBatchOutput()})
	}
	states := e.GetTenantStates()
	for _, t := range e.GetTenants() {
		tn := table.Tenant{ID: t.GetId(), AllowedRegions: t.GetAllowedRegions(), RPM: int64(t.GetRpm()), TPM: int64(t.GetTpm()),
			Budget: t.GetMonthlyBudget(), BudgetPeriod: t.GetBudgetPeriod(), HardLimit: t.GetHardLimit(),
			Cache:        cachePolicy(t.GetCacheMode(), t.GetCacheTtlSeconds(), t.GetCacheSimilarity()),
			WebhookAllow: t.GetWebhookAllow()}
		if ref := t.GetWebhookSecretRef(); ref != "" {
			// A secret that does not resolve leaves the tenant's
			// callbacks refused on this edge; the rest applies.
			tn.WebhookSecret, _ = c.r.resolve(ref)
		}
		// Both lists are sorted by tenant (Validate checks it).
		if i, ok := slices.BinarySearchFunc(states, t.GetId(), func(s *tablev1.TenantState, id string) int {
			return strings.Compare(s.GetTenant(), id)
		}); ok && states[i].GetExhausted() {
			tn.Exhausted, tn.ExhaustedUntil = true, msTime(states[i].GetExhaustedUntilUnixMs())
		}
		tab.Tenants = append(tab.Tenants, tn)
	}
}

func sameModel(a, b table.Model) bool {
	return a.ID == b.ID && a.OwnedBy == b.OwnedBy && a.Created == b.Created && slices.Equal(a.Capabilities, b.Capabilities) &&
		a.ContextLength == b.ContextLength && slices.Equal(a.AllowedRegions, b.AllowedRegions) &&
		(a.Local == nil) == (b.Local == nil) && (a.Local == nil || *a.Local == *b.Local)
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// cachePolicy is a route's or a tenant's cache fields as a policy.
func cachePolicy(mode string, ttlSeconds uint32, similarity float64) table.CachePolicy {
	return table.CachePolicy{Mode: mode, TTL: time.Duration(ttlSeconds) * time.Second, Similarity: similarity}
}
