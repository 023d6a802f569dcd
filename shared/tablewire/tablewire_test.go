package tablewire

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

var hashA = "sha256:" + strings.Repeat("a", 64)

func sample(rev uint64) *tablev1.RoutingTable {
	t := &tablev1.RoutingTable{Schema: Schema, Revision: rev, Entities: &tablev1.Entities{
		Regions:    []*controlv1.Region{{Id: "eu"}, {Id: "us"}},
		Nodes:      []*controlv1.Node{{Id: "edge-1", Region: "eu"}},
		Models:     []*controlv1.Model{{Id: "gpt"}, {Id: "tiny", Local: true, Ollama: "tiny"}},
		Placements: []*controlv1.Placement{{Id: "p1", Model: "tiny", Region: "eu", Desired: 1}},
		Providers: []*controlv1.Provider{
			{Id: "local", Kind: "local"},
			{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OAI_KEY", Region: "eu"},
		},
		Routes: []*controlv1.Route{
			{Model: "gpt", Targets: []*controlv1.Target{{Provider: "oai"}}, AllowedRegions: []string{"eu"}},
			{Model: "tiny", Targets: []*controlv1.Target{{Provider: "local"}}, Fallbacks: []*controlv1.Target{{Provider: "oai", Model: "gpt"}}},
		},
		Keys:    []*controlv1.Key{{Id: "k1", Hash: hashA, Tenant: "acme"}},
		Tenants: []*controlv1.Tenant{{Id: "acme"}},
		Prices:  []*controlv1.Price{{Model: "gpt", Provider: "oai", Input: 1, Output: 2}},
	}}
	Sort(t.Entities)
	return t
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*tablev1.Entities)
		field string
	}{
		{"valid", func(*tablev1.Entities) {}, ""},
		{"node region", func(e *tablev1.Entities) { e.Nodes[0].Region = "mars" }, "nodes[edge-1].region"},
		{"placement model", func(e *tablev1.Entities) { e.Placements[0].Model = "x" }, "placements[p1].model"},
		{"route model", func(e *tablev1.Entities) { e.Routes[0].Model = "gpt2" }, "routes[gpt2].model"},
		{"route provider", func(e *tablev1.Entities) { e.Routes[0].Targets[0].Provider = "x" }, "routes[gpt].targets[0].provider"},
		{"fallback provider", func(e *tablev1.Entities) { e.Routes[1].Fallbacks[0].Provider = "x" }, "routes[tiny].fallbacks[0].provider"},
		{"no targets", func(e *tablev1.Entities) { e.Routes[0].Targets = nil }, "routes[gpt].targets"},
		{"unplaced local", func(e *tablev1.Entities) { e.Placements = nil; e.Routes[1].Fallbacks = nil }, "routes[tiny]"},
		{"allowed region", func(e *tablev1.Entities) { e.Routes[0].AllowedRegions = []string{"mars"} }, "routes[gpt].allowed_regions[0]"},
		{"key tenant", func(e *tablev1.Entities) { e.Keys[0].Tenant = "x" }, "keys[k1].tenant"},
		{"price provider", func(e *tablev1.Entities) { e.Prices[0].Provider = "x" }, "prices[x/gpt].provider"},
		{"duplicate", func(e *tablev1.Entities) { e.Regions = append(e.Regions, e.Regions[1]) }, "regions[2]"},
		{"unsorted", func(e *tablev1.Entities) { e.Regions[0], e.Regions[1] = e.Regions[1], e.Regions[0] }, "regions[1]"},
		{"no id", func(e *tablev1.Entities) { e.Tenants = append(e.Tenants, &controlv1.Tenant{}) }, "tenants[1]"},
		{"tenant state", func(e *tablev1.Entities) {
			e.TenantStates = []*tablev1.TenantState{{Tenant: "acme", Exhausted: true, ExhaustedUntilUnixMs: 1}}
		}, ""},
		{"tenant state of no tenant", func(e *tablev1.Entities) {
			e.TenantStates = []*tablev1.TenantState{{Tenant: "gone", Exhausted: true}}
		}, "tenant_states[gone]"},
		{"tenant states unsorted", func(e *tablev1.Entities) {
			e.TenantStates = []*tablev1.TenantState{{Tenant: "acme"}, {Tenant: "acme"}}
		}, "tenant_states[1]"},

		// What could never route.
		{"route regions empty", func(e *tablev1.Entities) { e.Routes[0].AllowedRegions = []string{"us"} }, "routes[gpt].allowed_regions"},
		{"model regions empty", func(e *tablev1.Entities) { e.Models[0].AllowedRegions = []string{"us"} }, "models[gpt].allowed_regions"},
		{"model region unknown", func(e *tablev1.Entities) { e.Models[0].AllowedRegions = []string{"mars"} }, "models[gpt].allowed_regions[0]"},
		{"tenant regions empty", func(e *tablev1.Entities) { e.Tenants[0].AllowedRegions = []string{"us"} }, "tenants[acme].allowed_regions"},
		{"tenant region unknown", func(e *tablev1.Entities) { e.Tenants[0].AllowedRegions = []string{"eu", "mars"} }, "tenants[acme].allowed_regions[1]"},
		{"one region occupied is enough", func(e *tablev1.Entities) {
			e.Tenants[0].AllowedRegions = []string{"us", "eu"}
			e.Models[0].AllowedRegions = []string{"us", "eu"}
		}, ""},
		{"a provider's region is occupied", func(e *tablev1.Entities) {
			e.Nodes = nil
			e.Placements = nil
			e.Routes[1].Targets = e.Routes[1].Fallbacks
		}, ""},
		{"route excludes its provider", func(e *tablev1.Entities) {
			e.Providers[1].Region = "us"
			e.Nodes = append(e.Nodes, &controlv1.Node{Id: "edge-2", Region: "us"})
			e.Routes[0].AllowedRegions = []string{"eu"}
		}, "routes[gpt].allowed_regions"},
		{"route's provider has no region", func(e *tablev1.Entities) { e.Providers[1].Region = "" }, "routes[gpt].allowed_regions"},
		{"route served by its placed copies", func(e *tablev1.Entities) {
			e.Providers[1].Region = "us"
			e.Nodes = append(e.Nodes, &controlv1.Node{Id: "edge-2", Region: "us"})
			e.Routes[0].AllowedRegions = nil
			e.Routes[1].AllowedRegions = []string{"eu"}
		}, ""},
		{"route excludes its providers and placements", func(e *tablev1.Entities) {
			e.Nodes = append(e.Nodes, &controlv1.Node{Id: "edge-2", Region: "us"})
			e.Routes[1].AllowedRegions = []string{"us"}
		}, "routes[tiny].allowed_regions"},
		{"route served by a node placement", func(e *tablev1.Entities) {
			e.Nodes = append(e.Nodes, &controlv1.Node{Id: "edge-2", Region: "us"})
			e.Placements = append(e.Placements, &controlv1.Placement{Id: "p2", Model: "tiny", Node: "edge-2", Desired: 1})
			e.Routes[1].AllowedRegions = []string{"us"}
		}, ""},
		{"placement region without nodes", func(e *tablev1.Entities) { e.Placements[0].Region = "us" }, "placements[p1].region"},
		{"placement of a remote model", func(e *tablev1.Entities) { e.Placements[0].Model = "gpt" }, "placements[p1].model"},
		{"placement of a sourceless model", func(e *tablev1.Entities) { e.Models[1].Ollama = "" }, "placements[p1].model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := sample(7)
			tt.edit(tab.Entities)
			err := Validate(tab)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
	if err := Validate(&tablev1.RoutingTable{Schema: Schema + 1, Revision: 1}); !errors.Is(err, ErrSchema) {
		t.Fatalf("newer schema: %v", err)
	}
	if err := Validate(&tablev1.RoutingTable{Schema: Schema}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revision 0: %v", err)
	}
}

func TestDecodeCapsSize(t *testing.T) {
	b, err := Encode(sample(3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b, len(b)-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	got, err := Decode(b, len(b))
	if err != nil || !proto.Equal(got, sample(3)) {
		t.Fatalf("at the cap: %v", err)
	}
	if _, err := Decode([]byte{0xff, 0xff, 0xff}, 0); !errors.Is(err, ErrDecode) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestEncodeIsDeterministic(t *testing.T) {
	a, _ := Encode(sample(5))
	for range 20 {
		s := sample(5)
		for _, n := range s.Entities.Nodes {
			n.Labels = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}
		}
		b1, _ := Encode(s)
		b2, _ := Encode(s)
		if string(b1) != string(b2) {
			t.Fatal("same table, different bytes")
		}
	}
	if b, _ := Encode(sample(5)); string(a) != string(b) {
		t.Fatal("same table, different bytes")
	}
}

func TestDiffThenApply(t *testing.T) {
	old := sample(5)
	next := sample(9)
	e := next.Entities
	e.Routes[0].Targets = append(e.Routes[0].Targets, &controlv1.Target{Provider: "local", Model: "tiny"})
	e.Keys = nil
	e.Tenants = append(e.Tenants, &controlv1.Tenant{Id: "zeta"})
	e.Regions = e.Regions[:1]
	d := Diff(old, next)
	if len(d.Upserts.Routes) != 1 || len(d.Deletes.Keys) != 1 || len(d.Upserts.Tenants) != 1 || len(d.Deletes.Regions) != 1 || len(d.Upserts.Models) != 0 {
		t.Fatalf("delta: %v", d)
	}
	got, err := ApplyDelta(old, d)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, next) {
		t.Fatalf("applied delta differs:\n%v\n%v", got, next)
	}
	if !proto.Equal(old, sample(5)) {
		t.Fatal("ApplyDelta modified its input")
	}
	if _, err := ApplyDelta(sample(4), d); !errors.Is(err, ErrGap) {
		t.Fatalf("gap: %v", err)
	}
	bad := proto.Clone(Diff(old, next)).(*tablev1.TableDelta)
	bad.Upserts.Routes[0].Targets[0].Provider = "ghost"
	if _, err := ApplyDelta(old, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("dangling reference: %v", err)
	}
	if _, err := CheckSize(got, 10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	gone := Diff(old, next)
	gone.Deletes.Nodes = []string{"nope"}
	if _, err := ApplyDelta(old, gone); !errors.Is(err, ErrInvalid) {
		t.Fatalf("deleting a missing entity: %v", err)
	}
}

func TestToTable(t *testing.T) {
	env := map[string]string{"MERIDIAN_SECRET_OAI_KEY": "sk-test-123"}
	r := Resolver{Getenv: func(k string) string { return env[k] }, LocalEngine: true}
	tab, unusable, err := ToTable(sample(8), r)
	if err != nil || len(unusable) != 0 {
		t.Fatal(err, unusable)
	}
	if tab.Revision != 8 || len(tab.Models) != 2 || len(tab.Keys) != 1 || tab.Providers[1].APIKey.Reveal() != "sk-test-123" {
		t.Fatalf("table: %+v", tab)
	}
	if tgs := tab.Routes[1].Targets; len(tgs) != 2 || tgs[1].Provider != "oai" || tgs[1].Model != "gpt" {
		t.Fatalf("fallbacks must follow targets: %+v", tgs)
	}

	// Without the secret, the provider is unusable here: its targets go,
	// a model left with none goes, and the rest still applies.
	delete(env, "MERIDIAN_SECRET_OAI_KEY")
	tab, unusable, err = ToTable(sample(8), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(unusable) != 1 || !strings.HasPrefix(unusable[0], "oai: ") || strings.Contains(unusable[0], "OAI_KEY") {
		t.Fatalf("unusable: %q", unusable)
	}
	if len(tab.Models) != 1 || tab.Models[0].ID != "tiny" || len(tab.Routes[0].Targets) != 1 || len(tab.Keys) != 1 {
		t.Fatalf("table: %+v", tab)
	}

	r.ReadFile = func(p string) ([]byte, error) {
		if p == "/etc/meridian/secrets/oai" {
			return []byte("sk-file\n"), nil
		}
		return nil, fmt.Errorf("no such file")
	}
	s := sample(8)
	s.Entities.Providers[1].SecretRef = "file:/etc/meridian/secrets/oai"
	tab, _, err = ToTable(s, r)
	if err != nil || tab.Providers[1].APIKey.Reveal() != "sk-file" {
		t.Fatalf("file ref: %v", err)
	}

	// A table the edge's own validation rejects fails conversion.
	s = sample(8)
	s.Entities.Providers[1].BaseUrl = "ftp://nope"
	if err := CheckEdge(s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("edge validation: %v", err)
	}

	// An edge without a local engine serves the rest.
	tab, unusable, err = ToTable(sample(8), Resolver{Getenv: func(string) string { return "x" }})
	if err != nil || len(unusable) != 1 || !strings.HasPrefix(unusable[0], "local: ") || len(tab.Routes[1].Targets) != 1 || tab.Routes[1].Targets[0].Provider != "oai" {
		t.Fatalf("no local engine: %v %q %+v", err, unusable, tab)
	}
}

// Cache policies and the cached price reach the edge's table, TTLs in
// seconds becoming durations.
func TestToTableCachePolicy(t *testing.T) {
	s := sample(8)
	s.Entities.Routes[1].CacheMode, s.Entities.Routes[1].CacheTtlSeconds, s.Entities.Routes[1].CacheSimilarity = "force", 90, 0.9
	s.Entities.Tenants[0].CacheMode, s.Entities.Tenants[0].CacheTtlSeconds = "off", 5
	s.Entities.Prices[0].Cached = 0.25
	tab, _, err := ToTable(s, Resolver{Getenv: func(string) string { return "k" }, LocalEngine: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tab.Routes[1].Cache, (table.CachePolicy{Mode: "force", TTL: 90 * time.Second, Similarity: 0.9}); got != want {
		t.Fatalf("route cache %+v, want %+v", got, want)
	}
	if got, want := tab.Tenants[0].Cache, (table.CachePolicy{Mode: "off", TTL: 5 * time.Second}); got != want {
		t.Fatalf("tenant cache %+v, want %+v", got, want)
	}
	if tab.Prices[0].Cached != 0.25 || tab.Routes[0].Cache != (table.CachePolicy{}) {
		t.Fatalf("price %+v, route 0 cache %+v", tab.Prices[0], tab.Routes[0].Cache)
	}
	s.Entities.Routes[1].CacheMode = "sometimes"
	if err := CheckEdge(s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an unknown cache mode must not reach an edge: %v", err)
	}
}

// FuzzDecode feeds arbitrary bytes to the table decoder: it must never
// panic, and whatever it accepts must re-encode to a table it accepts
// again, equal to the first, and convert without panicking.
func FuzzDecode(f *testing.F) {
	b, _ := Encode(sample(3))
	f.Add(b)
	f.Add([]byte{})
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Decode(b, 1<<20)
		if err != nil {
			return
		}
		again, err := Encode(tab)
		if err != nil {
			t.Fatal(err)
		}
		tab2, err := Decode(again, 1<<20)
		if err != nil || !proto.Equal(tab, tab2) {
			t.Fatalf("re-decode: %v", err)
		}
		ToTable(tab, Resolver{Getenv: func(string) string { return "k" }, ReadFile: func(string) ([]byte, error) { return []byte("k"), nil }})
	})
}

// FuzzApplyDelta applies arbitrary update bytes to a valid table: it must
// never panic, never modify the base table, and whatever it produces must
// be a valid table at the delta's revision.
func FuzzApplyDelta(f *testing.F) {
	base := sample(5)
	next := sample(9)
	next.Entities.Keys = nil
	next.Entities.Regions = next.Entities.Regions[:1]
	u, _ := Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Delta{Delta: Diff(base, next)}})
	f.Add(u)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		up, err := DecodeUpdate(b, 1<<20)
		if err != nil || up.GetDelta() == nil {
			return
		}
		before, _ := Encode(base)
		got, err := ApplyDelta(base, up.GetDelta())
		if after, _ := Encode(base); string(before) != string(after) {
			t.Fatal("ApplyDelta modified its base")
		}
		if err != nil {
			return
		}
		if err := Validate(got); err != nil || got.GetRevision() != up.GetDelta().GetRevision() {
			t.Fatalf("applied table invalid: %v", err)
		}
	})
}

// A Converter that reuses its last conversion gives what a fresh one
// gives, through changed routes and providers that become unusable.
func TestConverterReuse(t *testing.T) {
	env := map[string]string{"MERIDIAN_SECRET_OAI_KEY": "k"}
	r := Resolver{Getenv: func(k string) string { return env[k] }, LocalEngine: true}
	conv := NewConverter(r)
	old := sample(5)
	if _, _, err := conv.ToTable(old); err != nil {
		t.Fatal(err)
	}
	next := sample(6)
	next.Entities.Routes[0] = &controlv1.Route{Model: "gpt", Targets: []*controlv1.Target{{Provider: "local", Model: "tiny"}, {Provider: "oai"}}}
	d := Diff(old, next)
	applied, err := ApplyDelta(old, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func(){func() {}, func() { delete(env, "MERIDIAN_SECRET_OAI_KEY") }, func() { env["MERIDIAN_SECRET_OAI_KEY"] = "k2" }} {
		step()
		got, _, err := conv.ToTable(applied)
		if err != nil {
			t.Fatal(err)
		}
		want, _, _ := ToTable(applied, r)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("reused conversion differs:\n%+v\n%+v", got, want)
		}
	}
}

// TestCloudProviderFields: the cloud kinds' fields reach the edge's
// table, and an Entra token in a secrets file is handed over as a file
// to read again, not only as the value it had.
func TestCloudProviderFields(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "azure-token"), []byte("tok-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := sample(9)
	s.Entities.Providers = append(s.Entities.Providers,
		&controlv1.Provider{Id: "az", Preset: "azure", BaseUrl: "https://r.openai.azure.com", ApiVersion: "2025-01-01-preview", Auth: "entra", SecretRef: "file:" + dir + "/azure-token"},
		&controlv1.Provider{Id: "bed", Preset: "bedrock", Region: "us", CloudRegion: "us-east-1"},
		&controlv1.Provider{Id: "vx", Preset: "vertex", Region: "eu", CloudRegion: "europe-west4", Project: "proj-1"})
	Sort(s.Entities)
	tab, unusable, err := ToTable(s, Resolver{Getenv: func(string) string { return "k" }, LocalEngine: true, Policy: SecretPolicy{Dir: dir}})
	if err != nil || len(unusable) != 0 {
		t.Fatal(err, unusable)
	}
	if err := tab.Validate(); err != nil { // fills presets, as the edge does
		t.Fatal(err)
	}
	got := map[string]table.Provider{}
	for _, p := range tab.Providers {
		got[p.ID] = p
	}
	if az := got["az"]; az.APIVersion != "2025-01-01-preview" || az.Auth != "entra" || az.TokenFile != dir+"/azure-token" || az.APIKey.Reveal() != "tok-1" {
		t.Fatalf("azure %+v", az)
	}
	if bed := got["bed"]; bed.CloudRegion != "us-east-1" || bed.BaseURL != "https://bedrock-runtime.us-east-1.amazonaws.com" {
		t.Fatalf("bedrock %+v", bed)
	}
	if vx := got["vx"]; vx.Project != "proj-1" || vx.BaseURL != "https://europe-west4-aiplatform.googleapis.com" {
		t.Fatalf("vertex %+v", vx)
	}
}
