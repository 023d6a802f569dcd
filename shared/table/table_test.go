package table

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func valid() *Table {
	return &Table{
		Providers: []Provider{{ID: "p", Kind: KindOpenAI, BaseURL: "http://127.0.0.1:9100/v1", APIKey: "sk-secret"}},
		Models:    []Model{{ID: "m"}},
		Routes:    []*Route{{Model: "m", Targets: []Target{{Provider: "p"}}}},
		Keys:      []*Key{{ID: "k", Hash: "sha256:" + strings.Repeat("ab", 32)}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Table)
		field string
	}{
		{"valid", func(*Table) {}, ""},
		{"provider id", func(t *Table) { t.Providers[0].ID = "" }, "providers[0].id"},
		{"dup provider", func(t *Table) { t.Providers = append(t.Providers, t.Providers[0]) }, "providers[1].id"},
		{"kind", func(t *Table) { t.Providers[0].Kind = "carrier-pigeon" }, "providers[0].kind"},
		{"no url", func(t *Table) { t.Providers[0].BaseURL = "" }, "providers[0].base_url"},
		{"ftp url", func(t *Table) { t.Providers[0].BaseURL = "ftp://x/v1" }, "providers[0].base_url"},
		{"creds in url", func(t *Table) { t.Providers[0].BaseURL = "http://u:p@h/v1" }, "providers[0].base_url"},
		{"local engine", func(t *Table) { t.Providers[0] = Provider{ID: "p", Kind: KindLocal} }, ""},
		{"local engine with url", func(t *Table) { t.Providers[0] = Provider{ID: "p", Kind: KindLocal, BaseURL: "http://127.0.0.1:1"} }, "providers[0].base_url"},
		{"negative timeout", func(t *Table) { t.Providers[0].ChunkTimeout = -1 }, "providers[0]"},
		{"bedrock", func(t *Table) {
			t.Regions = append(t.Regions, Region{ID: "us-east-1"})
			t.Providers[0] = Provider{ID: "p", Preset: "bedrock", Region: "us-east-1"}
		}, ""},
		{"bedrock without region", func(t *Table) { t.Providers[0] = Provider{ID: "p", Preset: "bedrock", CloudRegion: "us-east-1"} }, "providers[0].region"},
		{"bedrock odd cloud region", func(t *Table) {
			t.Regions = append(t.Regions, Region{ID: "us-east-1"})
			t.Providers[0] = Provider{ID: "p", Preset: "bedrock", Region: "us-east-1", CloudRegion: "us-east-1.evil.com/"}
		}, "providers[0].cloud_region"},
		{"vertex", func(t *Table) {
			t.Regions = append(t.Regions, Region{ID: "us-east-1"})
			t.Providers[0] = Provider{ID: "p", Preset: "vertex", Region: "us-east-1", CloudRegion: "us-east1", Project: "my-proj"}
		}, ""},
		{"vertex without project", func(t *Table) {
			t.Regions = append(t.Regions, Region{ID: "us-east-1"})
			t.Providers[0] = Provider{ID: "p", Preset: "vertex", Region: "us-east-1"}
		}, "providers[0].project"},
		{"azure", func(t *Table) {
			t.Providers[0] = Provider{ID: "p", Preset: "azure", BaseURL: "https://r.openai.azure.com", Auth: AuthEntra}
		}, ""},
		{"azure without url", func(t *Table) { t.Providers[0] = Provider{ID: "p", Preset: "azure"} }, "providers[0].preset"},
		{"api_version off azure", func(t *Table) { t.Providers[0].APIVersion = "2024-10-21" }, "providers[0].api_version"},
		{"project off vertex", func(t *Table) { t.Providers[0].Project = "x" }, "providers[0].project"},
		{"auth off azure", func(t *Table) { t.Providers[0].Auth = AuthEntra }, "providers[0].auth"},
		{"unknown auth", func(t *Table) {
			t.Providers[0] = Provider{ID: "p", Preset: "azure", BaseURL: "https://r", Auth: "oauth"}
		}, "providers[0].auth"},
		{"model id", func(t *Table) { t.Models[0].ID = "" }, "models[0].id"},
		{"route to unknown model", func(t *Table) { t.Routes[0].Model = "x" }, "routes[0].model"},
		{"route to unknown provider", func(t *Table) { t.Routes[0].Targets[0].Provider = "x" }, "routes[0].targets[0].provider"},
		{"no targets", func(t *Table) { t.Routes[0].Targets = nil }, "routes[0].targets"},
		{"strategy", func(t *Table) { t.Routes[0].Strategy = "random" }, "routes[0].strategy"},
		{"dup route", func(t *Table) { t.Routes = append(t.Routes, t.Routes[0]) }, "routes[1].model"},
		{"empty route", func(t *Table) { t.Routes = append(t.Routes, nil) }, "routes[1]"},
		{"model without route", func(t *Table) { t.Models = append(t.Models, Model{ID: "lonely"}) }, "models[lonely]"},
		{"key hash", func(t *Table) { t.Keys[0].Hash = "md5:abc" }, "keys[0].hash"},
		{"key id", func(t *Table) { t.Keys[0].ID = "" }, "keys[0].id"},
		{"key region", func(t *Table) { t.Keys[0].AllowedRegions = []string{"mars"} }, "keys[0].allowed_regions[0]"},
		{"key rpm", func(t *Table) { t.Keys[0].RPM = -1 }, "keys[0]"},
		{"tenant tpm", func(t *Table) { t.Tenants = []Tenant{{ID: "a", TPM: -1}} }, "tenants[0]"},
		{"tenant budget", func(t *Table) { t.Tenants = []Tenant{{ID: "a", Budget: -5}} }, "tenants[0].budget"},
		{"tenant period", func(t *Table) { t.Tenants = []Tenant{{ID: "a", BudgetPeriod: "fortnight"}} }, "tenants[0].budget_period"},
		{"tenant limits", func(t *Table) {
			t.Tenants = []Tenant{{ID: "a", RPM: 60, TPM: 1000, Budget: 5, BudgetPeriod: "week", HardLimit: true}}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := valid()
			tt.edit(tab)
			err := tab.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
}

func TestPriceFor(t *testing.T) {
	tab := valid()
	tab.Routes[0].Targets[0].Model = "m-2025"
	tab.Prices = []Price{{Provider: "p", Model: "m", Input: 1, Output: 2}, {Provider: "p", Model: "other-upstream", Input: 5, Output: 6}}
	c, err := Compile(tab)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.PriceFor("p", "m", "m-2025"); !ok || p.Input != 1 {
		t.Errorf("by model ID: %v %v, want the price written for m", p, ok)
	}
	if p, ok := c.PriceFor("p", "x", "other-upstream"); !ok || p.Input != 5 {
		t.Errorf("by upstream name: %v %v", p, ok)
	}
	if _, ok := c.PriceFor("q", "m", "m"); ok {
		t.Error("another provider's price matched")
	}
}

func TestCompiledLookups(t *testing.T) {
	c, err := Compile(valid())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Route("m"); !ok {
		t.Fatal("route m missing")
	}
	if _, ok := c.Provider("p"); !ok {
		t.Fatal("provider p missing")
	}
	if !c.HasKeys() {
		t.Fatal("keys present but HasKeys is false")
	}
	if k, ok := c.KeyByHash(strings.Repeat("ab", 32)); !ok || k.ID != "k" {
		t.Fatal("key lookup by hash failed")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	p := valid().Providers[0]
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", p.APIKey, "provider", p)
	for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprintf("%v", p.APIKey), logged.String()} {
		if strings.Contains(s, "sk-secret") {
			t.Fatalf("secret leaked: %s", s)
		}
	}
	if p.APIKey.Reveal() != "sk-secret" {
		t.Fatal("Reveal lost the secret")
	}
}

func TestPresets(t *testing.T) {
	tab := valid()
	tab.Providers = append(tab.Providers,
		Provider{ID: "claude", Preset: "anthropic", APIKey: "k"},
		Provider{ID: "local", Preset: "openai-compatible", BaseURL: "http://127.0.0.1:9/v1"},
		Provider{ID: "eu", Preset: "mistral", BaseURL: "https://eu.example/v1"},
	)
	c, err := Compile(tab)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Provider("claude"); p.Kind != KindAnthropic || p.BaseURL != "https://api.anthropic.com/v1" {
		t.Fatalf("anthropic preset: %+v", p)
	}
	if p, _ := c.Provider("eu"); p.Kind != KindOpenAI || p.BaseURL != "https://eu.example/v1" {
		t.Fatalf("explicit base_url must win: %+v", p)
	}
	for name, p := range map[string]Provider{
		"unknown":       {ID: "x", Preset: "skynet"},
		"needs url":     {ID: "x", Preset: "openai-compatible"},
		"contradiction": {ID: "x", Preset: "gemini", Kind: KindOpenAI},
	} {
		tab := valid()
		tab.Providers = append(tab.Providers, p)
		var fe *FieldError
		if err := tab.Validate(); !errors.As(err, &fe) || fe.Field != "providers[1].preset" {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	for _, n := range PresetNames() {
		pr := Presets[n]
		if !slices.Contains(knownKinds, pr.Kind) {
			t.Errorf("preset %s has unknown kind %s", n, pr.Kind)
		}
	}
}
