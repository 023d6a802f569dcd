package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

const sample = `
node_id: edge-1
region: eu-west
listen: 127.0.0.1:9000
max_body_bytes: 2048
stream_keepalive: 5s
providers:
  - id: openai
    kind: openai
    base_url: http://127.0.0.1:9100/v1
    api_key_env: TEST_OPENAI_KEY
    first_byte_timeout: 2s
models:
  - id: gpt-4o-mini
routes:
  - model: gpt-4o-mini
    targets:
      - provider: openai
        model: gpt-4o-mini-2024-07-18
`

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad(t *testing.T) {
	c, err := Load(write(t, sample), env(map[string]string{"TEST_OPENAI_KEY": "sk-test", "MERIDIAN_REGION": "us-east"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "edge-1" || c.Listen != "127.0.0.1:9000" || c.MaxBodyBytes != 2048 || c.StreamKeepAlive != 5*time.Second {
		t.Fatalf("file values not applied: %+v", c)
	}
	if c.Region != "us-east" {
		t.Fatalf("env override not applied: region = %q", c.Region)
	}
	if c.DrainTimeout != DefaultConfig().DrainTimeout {
		t.Fatal("defaults lost for fields the file does not set")
	}
	p := c.Table.Providers[0]
	if p.APIKey.Reveal() != "sk-test" || p.FirstByteTimeout != 2*time.Second {
		t.Fatalf("provider = %+v", p)
	}
	if c.Table.Routes[0].Targets[0].Model != "gpt-4o-mini-2024-07-18" {
		t.Fatal("route target model lost")
	}
}

func TestLoadErrorsNameFileAndField(t *testing.T) {
	tests := []struct {
		name string
		body string
		env  map[string]string
		want []string
	}{
		{"unknown field", "nodeid: x\n", nil, []string{"edge.yaml", "nodeid"}},
		{"bad type", "max_body_bytes: lots\n", nil, []string{"edge.yaml", "lots"}},
		{"bad value", "max_body_bytes: 10\n", nil, []string{"edge.yaml", "max_body_bytes"}},
		{"bad listen", "listen: nowhere\n", nil, []string{"edge.yaml", "listen"}},
		{"bad log level", "log_level: loud\n", nil, []string{"log_level"}},
		{"zero max in flight", "max_in_flight: 0\n", nil, []string{"edge.yaml", "max_in_flight"}},
		{"zero stream write timeout", "stream_write_timeout: 0s\n", nil, []string{"edge.yaml", "stream_write_timeout"}},
		{"missing key env", sample, nil, []string{"edge.yaml", "providers[0].api_key_env", "TEST_OPENAI_KEY"}},
		{"bad env", "", map[string]string{"MERIDIAN_DRAIN_TIMEOUT": "soon"}, []string{"MERIDIAN_DRAIN_TIMEOUT"}},
		{"broken yaml", "providers: [\n", nil, []string{"edge.yaml"}},
		{"table error", strings.Replace(sample, "provider: openai", "provider: nobody", 1), map[string]string{"TEST_OPENAI_KEY": "k"},
			[]string{"edge.yaml", "routes[0].targets[0].provider", "nobody"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(write(t, tt.body), env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadNoFile(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" {
		t.Fatalf("listen = %q", c.Listen)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestShippedConfigs keeps the configs in the repo loadable.
func TestShippedConfigs(t *testing.T) {
	keys := env(map[string]string{"OPENAI_API_KEY": "k", "MISTRAL_API_KEY": "k"})
	for _, p := range []string{"../../ops/edge.example.yaml"} {
		if _, err := Load(p, keys); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestGossipConfig(t *testing.T) {
	key := "AAECAwQFBgcICQoLDA0ODw==" // 16 bytes
	ok := "gossip:\n  enabled: true\n  bind: 127.0.0.1:0\n  advertise: 127.0.0.1\n  seeds: [\"127.0.0.1:7946\"]\n  keys_env: TEST_GOSSIP_KEYS\n"
	c, err := Load(write(t, ok), env(map[string]string{"TEST_GOSSIP_KEYS": key}))
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := c.Gossip.DecodedKeys(); err != nil || len(keys) != 1 || len(keys[0]) != 16 {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	if c.Gossip.Cluster != "meridian" || c.Gossip.Profile != "lan" {
		t.Fatalf("defaults lost: %+v", c.Gossip)
	}
	for name, tt := range map[string]struct{ body, field string }{
		"no advertise": {"gossip:\n  enabled: true\n  keys: [\"" + key + "\"]\n", "gossip.advertise"},
		"no key":       {"gossip:\n  enabled: true\n  advertise: 10.0.0.1\n", "gossip.keys"},
		"bad key":      {"gossip:\n  enabled: true\n  advertise: 10.0.0.1\n  keys: [\"c2hvcnQ=\"]\n", "gossip.keys[0]"},
		"bad profile":  {"gossip:\n  enabled: true\n  advertise: 10.0.0.1\n  profile: moon\n  keys: [\"" + key + "\"]\n", "gossip.profile"},
		"bad seed":     {"gossip:\n  enabled: true\n  advertise: 10.0.0.1\n  seeds: [nohost]\n  keys: [\"" + key + "\"]\n", "gossip.seeds[0]"},
	} {
		if _, err := Load(write(t, tt.body), nil); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: err = %v, want it to name %s", name, err, tt.field)
		}
	}
}

func TestLocalEngineConfig(t *testing.T) {
	const local = sample + `
local:
  enabled: true
  binary: bin/ollama
  num_thread: 1
  models:
    - name: tiny
      gguf: bin/tiny.gguf
      quantize: q8_0
    - name: gpt-4o-mini
      gguf: bin/tiny.gguf
`
	c, err := Load(write(t, local), env(map[string]string{"TEST_OPENAI_KEY": "sk-test", "MERIDIAN_LOCAL_BINARY": "/opt/ollama"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Local.Binary != "/opt/ollama" || c.Local.NumThread != 1 || c.Local.NumParallel != 1 || c.Local.Queue != 16 {
		t.Fatalf("local = %+v", c.Local)
	}
	tab := c.EffectiveTable()
	// A placed model no route serves gets a route to the local engine;
	// one that already has a route (gpt-4o-mini) keeps it.
	var routes []string
	for _, r := range tab.Routes {
		routes = append(routes, r.Model+"->"+r.Targets[0].Provider)
	}
	if strings.Join(routes, ",") != "gpt-4o-mini->openai,tiny->local" {
		t.Fatalf("routes = %v", routes)
	}
	if len(c.Table.Routes) != 1 || len(c.Table.Providers) != 1 {
		t.Fatal("EffectiveTable modified the static table")
	}

	bad := []struct{ yaml, field string }{
		{"local:\n  enabled: true\n  models:\n    - name: tiny\n", "local.models[0]"},
		{"local:\n  enabled: true\n  models:\n    - name: tiny\n      gguf: x\n      quantize: q3_weird\n", "local.models[0].quantize"},
		{"local:\n  enabled: true\n  models:\n    - name: 'bad name'\n      pull: true\n", "local.models[0].name"},
		{"local:\n  enabled: true\n  num_parallel: 0\n", "local.num_parallel"},
		{"local:\n  enabled: true\n  url: ftp://x\n", "local.url"},
		{"providers:\n  - id: mine\n    kind: local\nmodels: [{id: m}]\nroutes: [{model: m, targets: [{provider: mine}]}]\n", "providers[0].kind"},
	}
	for _, tt := range bad {
		_, err := Load(write(t, "node_id: e\n"+tt.yaml), nil)
		if err == nil || !strings.Contains(err.Error(), tt.field+":") {
			t.Errorf("%q: err = %v, want one naming %s", tt.yaml, err, tt.field)
		}
	}
}

// The auth mode is "keys" unless "none" is written, or the edge stands
// alone with no keys at all: nothing a table lacks can open an edge.
func TestAuthMode(t *testing.T) {
	const (
		control = "control:\n  nats_urls: [\"nats://127.0.0.1:4222\"]\n  token: t0k3n-0123456789\n  table_public_key: ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"
		keys    = "keys:\n  - id: k\n    hash: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
	)
	for _, tt := range []struct {
		name, body string
		env        map[string]string
		mode       string
		derived    bool
	}{
		{"standalone, no keys", "", nil, AuthNone, true},
		{"standalone with keys", keys, nil, AuthKeys, true},
		{"follows a control plane", control, nil, AuthKeys, true},
		{"control plane from the environment", "", map[string]string{"MERIDIAN_NATS_URLS": "nats://127.0.0.1:4222", "T": "t0k3n-0123456789", "MERIDIAN_TABLE_PUBLIC_KEY": "ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}, AuthKeys, true},
		{"written none, control plane", control + "auth: none\n", nil, AuthNone, false},
		{"written keys, standalone without keys", "auth: keys\n", nil, AuthKeys, false},
		{"from the environment", "", map[string]string{"MERIDIAN_AUTH": "keys"}, AuthKeys, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if tt.env["T"] != "" {
				body += "control:\n  token_env: T\n"
			}
			c, err := Load(write(t, body), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if mode, derived := c.AuthMode(); mode != tt.mode || derived != tt.derived {
				t.Fatalf("AuthMode() = %q, derived %v; want %q, derived %v", mode, derived, tt.mode, tt.derived)
			}
		})
	}
}

func TestAuthModeValidation(t *testing.T) {
	for name, body := range map[string]string{
		"unknown mode":   "auth: open\n",
		"misspelt":       "auth: Keys\n",
		"none with keys": "auth: none\nkeys:\n  - id: k\n    hash: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
	} {
		_, err := Load(write(t, body), nil)
		var fe *table.FieldError
		if !errors.As(err, &fe) || fe.Field != "auth" {
			t.Errorf("%s: err = %v, want a field error on auth", name, err)
		}
	}
	c := DefaultConfig()
	c.Auth = "sometimes"
	var fe *table.FieldError
	if err := c.Validate(); !errors.As(err, &fe) || fe.Field != "auth" || !strings.Contains(fe.Msg, `"sometimes"`) {
		t.Fatalf("Validate: %v", err)
	}
}

func TestUsageConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Records() {
		t.Fatal("a standalone edge without a spool dir records usage")
	}
	c.Usage.SpoolDir = t.TempDir()
	if !c.Records() || c.UsageDir() != c.Usage.SpoolDir {
		t.Fatalf("spool dir %q: records %v, dir %q", c.Usage.SpoolDir, c.Records(), c.UsageDir())
	}
	c.Usage.LimitsInterval = time.Millisecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "usage.limits_interval") {
		t.Fatalf("a 1ms exchange interval: %v", err)
	}
}

func TestCacheConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Cache.Enabled() {
		t.Fatal("the cache is on by default")
	}
	const file = `
node_id: e
cache:
  max_bytes: 1048576
  default_ttl: 90s
providers:
  - {id: p, kind: openai, base_url: "http://127.0.0.1:1/v1"}
models: [{id: m}]
routes:
  - model: m
    targets: [{provider: p}]
    cache: {mode: force, ttl: 30s, similarity: 0.9}
tenants:
  - id: acme
    cache: {mode: "off"}
prices:
  - {provider: p, model: m, input: 3, output: 15, cached: 0.3}
`
	c, err := Load(write(t, file), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cache.Enabled() || c.Cache.MaxBytes != 1<<20 || c.Cache.DefaultTTL != 90*time.Second {
		t.Fatalf("cache %+v", c.Cache)
	}
	if got, want := c.Table.Routes[0].Cache, (table.CachePolicy{Mode: "force", TTL: 30 * time.Second, Similarity: 0.9}); got != want {
		t.Fatalf("route cache %+v, want %+v", got, want)
	}
	if c.Table.Tenants[0].Cache.Mode != table.CacheOff || c.Table.Prices[0].Cached != 0.3 {
		t.Fatalf("tenant %+v, price %+v", c.Table.Tenants[0], c.Table.Prices[0])
	}
	for _, bad := range []string{"cache:\n  max_bytes: -1\n", "cache:\n  max_bytes: 10\n  max_entry_bytes: 11\n", "cache:\n  default_ttl: 0s\n"} {
		if _, err := Load(write(t, "node_id: e\n"+bad), env(nil)); err == nil || !strings.Contains(err.Error(), "cache.") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := Load(write(t, strings.Replace(file, "mode: force", "mode: sometimes", 1)), env(nil)); err == nil || !strings.Contains(err.Error(), "cache") {
		t.Errorf("an unknown cache mode: %v", err)
	}
}

func TestJobsConfig(t *testing.T) {
	c, err := Load(write(t, "jobs:\n  workers: 6\n  ack_wait: 45s\n  max_deliver: 3\n  webhook_timeout: 2s\n  webhook_retry_for: 1h\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Jobs != (Jobs{Workers: 6, AckWait: 45 * time.Second, MaxDeliver: 3, WebhookTimeout: 2 * time.Second, WebhookRetryFor: time.Hour}) {
		t.Fatalf("jobs: %+v", c.Jobs)
	}
	if d := DefaultConfig().Jobs; d != DefaultJobs() || d.Workers != 2 || d.MaxDeliver != 5 {
		t.Fatalf("defaults: %+v", d)
	}
	for field, edit := range map[string]func(*Jobs){
		"jobs.workers":           func(j *Jobs) { j.Workers = 0 },
		"jobs.ack_wait":          func(j *Jobs) { j.AckWait = 10 * time.Millisecond },
		"jobs.max_deliver":       func(j *Jobs) { j.MaxDeliver = 0 },
		"jobs.webhook_timeout":   func(j *Jobs) { j.WebhookTimeout = 0 },
		"jobs.webhook_retry_for": func(j *Jobs) { j.WebhookRetryFor = 30 * 24 * time.Hour },
	} {
		c := DefaultConfig()
		edit(&c.Jobs)
		var fe *table.FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}
