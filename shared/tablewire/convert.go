package tablewire

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// maxSecretFile bounds a secret file read for a secret_ref, bytes.
const maxSecretFile = 64 << 10

// Resolver reads the credentials that providers' secret_refs name, on the
// edge that uses them.
type Resolver struct {
	// Getenv reads "env:NAME" refs. Nil means os.Getenv.
	Getenv func(string) string
	// ReadFile reads "file:/path" refs. Nil means reading the file,
	// up to 64 KiB.
	ReadFile func(string) ([]byte, error)
	// LocalEngine says whether this edge runs a local engine. Where it
	// runs none, providers of kind local are unusable.
	LocalEngine bool
}

// errUnresolved explains a ref that did not resolve without naming it:
// the ref says where a credential lives, which stays out of logs too.
var errUnresolved = errors.New("its secret_ref did not resolve on this edge")

func (r Resolver) resolve(ref string) (table.Secret, error) {
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
			read = readSmallFile
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
	tab, _, err := ToTable(t, Resolver{
		Getenv:      func(string) string { return "placeholder" },
		ReadFile:    func(string) ([]byte, error) { return []byte("placeholder"), nil },
		LocalEngine: true,
	})
	if err == nil {
		err = tab.Validate()
	}
	if err != nil {
		return fmt.Errorf("%w: the edge's table check: %w", ErrInvalid, err)
	}
	return nil
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretFile))
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
//   - every model with a route, the route's targets followed by its
//     fallbacks, tried in order (the edge's router is "ordered" today;
//     the declared strategy, allowed regions and price caps stay in the
//     RoutingTable for the routers that read them). A model with no route,
//     or whose targets are all unusable here, is not served;
//   - every key hash.
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
	out table.Route
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
		tab.Providers = append(tab.Providers, table.Provider{
			ID: p.GetId(), Preset: p.GetPreset(), Kind: p.GetKind(), BaseURL: p.GetBaseUrl(), APIKey: key,
		})
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

	// Models and routes are both sorted by model ID: one walk pairs them.
	models := c.scratch[:0]
	tab.Routes = make([]table.Route, 0, len(routes))
	ri := 0
	for _, m := range e.GetModels() {
		for ri < len(routes) && routes[ri].GetModel() < m.GetId() {
			ri++
		}
		if ri == len(routes) || routes[ri].GetModel() != m.GetId() || !conv[ri].ok {
			continue
		}
		// Capabilities are shared, not copied: neither side modifies them.
		models = append(models, table.Model{ID: m.GetId(), OwnedBy: m.GetOwnedBy(), Capabilities: m.GetCapabilities()})
		tab.Routes = append(tab.Routes, conv[ri].out)
	}
	if c.models != nil && slices.EqualFunc(models, c.models, sameModel) {
		tab.Models, c.scratch = c.models, models // the scratch stays ours
	} else {
		tab.Models, c.models, c.scratch = models, models, nil // the table owns it now
	}
	for _, k := range e.GetKeys() {
		tab.Keys = append(tab.Keys, table.Key{ID: k.GetId(), Hash: k.GetHash()})
	}
	return tab, unusable, nil
}

// convertRoute is one route for the edge: its targets, then its
// fallbacks, those on usable providers, without repeats.
func convertRoute(rt *controlv1.Route, usable map[string]bool) converted {
	out := table.Route{Model: rt.GetModel(), Targets: make([]table.Target, 0, len(rt.GetTargets())+len(rt.GetFallbacks()))}
	for _, ts := range [2][]*controlv1.Target{rt.GetTargets(), rt.GetFallbacks()} {
		for _, tg := range ts {
			target := table.Target{Provider: tg.GetProvider(), Model: tg.GetModel()}
			if usable[target.Provider] && !slices.Contains(out.Targets, target) {
				out.Targets = append(out.Targets, target)
			}
		}
	}
	return converted{src: rt, out: out, ok: len(out.Targets) > 0}
}

func sameModel(a, b table.Model) bool {
	return a.ID == b.ID && a.OwnedBy == b.OwnedBy && a.Created == b.Created && slices.Equal(a.Capabilities, b.Capabilities)
}
