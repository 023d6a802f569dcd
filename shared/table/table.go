// Package table defines Meridian's routing table: the providers, models,
// routes and key hashes an edge routes by.
//
// The same types serve two sources. An edge that runs on its own fills a
// Table from the static lists in its config file; the control plane compiles
// its replicated state into the same Table and distributes it. Either way the
// edge calls Compile, which validates the table and builds the lookup indexes
// the request path reads. A Table that fails validation is never used: the
// caller keeps its last good one.
//
// This package holds data and validation only. It must never do I/O.
package table

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Table is one revision of the routing table.
type Table struct {
	// Revision is monotonic. A static table from a config file has
	// revision 0; the control plane uses its Raft index.
	Revision uint64 `yaml:"revision,omitempty" json:"revision,omitempty"`
	// Providers are the upstream endpoints requests can be sent to.
	Providers []Provider `yaml:"providers" json:"providers"`
	// Models are the model names clients may ask for.
	Models []Model `yaml:"models" json:"models"`
	// Routes say, per model, which targets serve it and in what order.
	Routes []Route `yaml:"routes" json:"routes"`
	// Keys are the client API keys the edge accepts, as hashes. When
	// empty, the edge accepts requests without a key.
	Keys []Key `yaml:"keys,omitempty" json:"keys,omitempty"`
}

// Provider kinds. Each kind names a wire format an adapter speaks.
const (
	// KindOpenAI is any OpenAI-compatible server: OpenAI itself, Mistral,
	// DeepSeek, Groq, Together, vLLM, TGI, Ollama's /v1 and the mock.
	KindOpenAI = "openai"
)

var knownKinds = []string{KindOpenAI}

// Provider is one upstream endpoint.
type Provider struct {
	// ID names the provider in routes, metrics and route headers.
	ID string `yaml:"id" json:"id"`
	// Preset names a known provider ("openai", "anthropic", "gemini",
	// "mistral", ...; see Presets), which supplies Kind and BaseURL.
	Preset string `yaml:"preset,omitempty" json:"preset,omitempty"`
	// Kind is the wire format: "openai", "anthropic", "gemini" or
	// "ollama"; or "local", the node's own engine. A preset sets it.
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// BaseURL is the API root including its version path, for example
	// "https://api.example.com/v1" (Ollama's has none). A preset sets it.
	// Only operators set it; a request never can.
	BaseURL string `yaml:"base_url,omitempty" json:"base_url,omitempty"`
	// APIKey is the provider credential. It is redacted wherever it is
	// printed or logged.
	APIKey Secret `yaml:"api_key,omitempty" json:"api_key,omitempty"`
	// APIKeyEnv names an environment variable that holds the credential.
	// It is read when the config is loaded and wins over APIKey.
	APIKeyEnv string `yaml:"api_key_env,omitempty" json:"api_key_env,omitempty"`
	// ConnectTimeout bounds TCP and TLS connection setup. Zero means 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout,omitempty" json:"connect_timeout,omitempty"`
	// FirstByteTimeout bounds the wait for response headers once the
	// request is sent. Zero means 60s.
	FirstByteTimeout time.Duration `yaml:"first_byte_timeout,omitempty" json:"first_byte_timeout,omitempty"`
	// ChunkTimeout bounds the silence between two streamed chunks, and
	// the wait for a non-streamed body. Zero means 120s.
	ChunkTimeout time.Duration `yaml:"chunk_timeout,omitempty" json:"chunk_timeout,omitempty"`
	// MaxIdleConns is the size of the idle connection pool kept to this
	// provider. Zero means 256.
	MaxIdleConns int `yaml:"max_idle_conns,omitempty" json:"max_idle_conns,omitempty"`
}

// Provider timeout and pool defaults, used where a field is zero.
const (
	DefaultConnectTimeout   = 5 * time.Second
	DefaultFirstByteTimeout = 60 * time.Second
	DefaultChunkTimeout     = 120 * time.Second
	DefaultMaxIdleConns     = 256
)

// WithDefaults returns p with zero timeouts and pool sizes filled in.
func (p Provider) WithDefaults() Provider {
	if p.ConnectTimeout == 0 {
		p.ConnectTimeout = DefaultConnectTimeout
	}
	if p.FirstByteTimeout == 0 {
		p.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if p.ChunkTimeout == 0 {
		p.ChunkTimeout = DefaultChunkTimeout
	}
	if p.MaxIdleConns == 0 {
		p.MaxIdleConns = DefaultMaxIdleConns
	}
	return p
}

// Model is a model name clients may ask for.
type Model struct {
	// ID is the name clients send in "model".
	ID string `yaml:"id" json:"id"`
	// OwnedBy is reported by GET /v1/models. Empty means "meridian".
	OwnedBy string `yaml:"owned_by,omitempty" json:"owned_by,omitempty"`
	// Created is the Unix time reported by GET /v1/models.
	Created int64 `yaml:"created,omitempty" json:"created,omitempty"`
	// Capabilities, when listed, are all the model accepts beyond text:
	// "vision" (image inputs) and "tools" (tool definitions). A request
	// needing one the model lacks gets a 400 before it is sent anywhere.
	// An empty list means "not declared": nothing is checked.
	Capabilities []string `yaml:"capabilities,omitempty" json:"capabilities,omitempty"`
}

// Model capabilities.
const (
	CapVision = "vision"
	CapTools  = "tools"
)

// Has reports whether m declares capability c, or declares none.
func (m *Model) Has(c string) bool {
	return len(m.Capabilities) == 0 || slices.Contains(m.Capabilities, c)
}

// Route strategies.
const (
	// StrategyOrdered tries targets in the order given, moving on only
	// when a target fails before its first byte.
	StrategyOrdered = "ordered"
)

// Route says which targets serve a model.
type Route struct {
	// Model is the Model.ID this route serves.
	Model string `yaml:"model" json:"model"`
	// Strategy picks the order of targets. Empty means "ordered".
	Strategy string `yaml:"strategy,omitempty" json:"strategy,omitempty"`
	// Targets are tried in order; later ones are fallbacks.
	Targets []Target `yaml:"targets" json:"targets"`
}

// Target is one place a model can run.
type Target struct {
	// Provider is a Provider.ID.
	Provider string `yaml:"provider" json:"provider"`
	// Model is the provider's own name for the model. Empty means the
	// route's model name.
	Model string `yaml:"model,omitempty" json:"model,omitempty"`
}

// Key is a client API key, held only as a hash.
type Key struct {
	// ID names the key in logs and metrics; it is not secret.
	ID string `yaml:"id" json:"id"`
	// Hash is "sha256:" followed by the hex SHA-256 of the key.
	Hash string `yaml:"hash" json:"hash"`
}

// Secret is a credential. It prints as "[redacted]" through fmt, slog,
// JSON and YAML so
// it cannot leak into logs or error bodies by accident.
type Secret string

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString implements fmt.GoStringer, used by %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts the secret, so a table or config dumped as JSON (or
// logged by slog's JSON handler) never carries it. Tables that must carry
// secrets to edges use their own wire encoding.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalYAML redacts the secret in YAML dumps.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Reveal returns the credential itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid routing table")

// FieldError is a validation failure that names the offending field, with
// a path such as "providers[1].base_url".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(format string, args ...any) func(msg string, margs ...any) error {
	field := fmt.Sprintf(format, args...)
	return func(msg string, margs ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(msg, margs...)}
	}
}

// Validate checks the table for missing fields, duplicates and dangling
// references. It returns the first problem found, as a *FieldError.
func (t *Table) Validate() error {
	_, err := Compile(t)
	return err
}

// Compiled is a validated table with lookup indexes. It is immutable once
// built, so the request path can read it without locks while a new one is
// compiled beside it.
type Compiled struct {
	table     *Table
	providers map[string]*Provider
	models    map[string]*Model
	routes    map[string]*Route
	keys      map[string]*Key
}

// Compile validates t and builds its indexes. It fills providers' kinds
// and base URLs from their presets, in t itself. The caller must not
// modify t afterwards.
func Compile(t *Table) (*Compiled, error) {
	c := &Compiled{
		table:     t,
		providers: make(map[string]*Provider, len(t.Providers)),
		models:    make(map[string]*Model, len(t.Models)),
		routes:    make(map[string]*Route, len(t.Routes)),
		keys:      make(map[string]*Key, len(t.Keys)),
	}
	for i := range t.Providers {
		p := &t.Providers[i]
		bad := fieldErr("providers[%d]", i)
		if p.ID == "" {
			return nil, fieldErr("providers[%d].id", i)("is required")
		}
		if _, dup := c.providers[p.ID]; dup {
			return nil, fieldErr("providers[%d].id", i)("duplicate provider %q", p.ID)
		}
		if err := applyPreset(p); err != nil {
			fe := err.(*FieldError)
			fe.Field = fmt.Sprintf("providers[%d].preset", i)
			return nil, fe
		}
		if !slices.Contains(knownKinds, p.Kind) {
			return nil, fieldErr("providers[%d].kind", i)("unknown kind %q (known: %s)", p.Kind, strings.Join(knownKinds, ", "))
		}
		if p.Kind == KindLocal {
			if p.BaseURL != "" || p.APIKey != "" || p.APIKeyEnv != "" {
				return nil, fieldErr("providers[%d].base_url", i)("must be empty for kind %q: the local engine is the node's own", KindLocal)
			}
		} else if p.Kind == KindPeer {
			if _, _, err := ParsePeerURL(p.BaseURL); err != nil {
				return nil, fieldErr("providers[%d].base_url", i)("%v", err)
			}
		} else if err := checkBaseURL(p.BaseURL); err != nil {
			return nil, fieldErr("providers[%d].base_url", i)("%v", err)
		}
		if p.ConnectTimeout < 0 || p.FirstByteTimeout < 0 || p.ChunkTimeout < 0 || p.MaxIdleConns < 0 {
			return nil, bad("timeouts and pool sizes must not be negative")
		}
		c.providers[p.ID] = p
	}
	for i := range t.Models {
		m := &t.Models[i]
		if m.ID == "" {
			return nil, fieldErr("models[%d].id", i)("is required")
		}
		if _, dup := c.models[m.ID]; dup {
			return nil, fieldErr("models[%d].id", i)("duplicate model %q", m.ID)
		}
		for j, cp := range m.Capabilities {
			if cp != CapVision && cp != CapTools {
				return nil, fieldErr("models[%d].capabilities[%d]", i, j)("unknown capability %q (known: %s, %s)", cp, CapVision, CapTools)
			}
		}
		c.models[m.ID] = m
	}
	for i := range t.Routes {
		r := &t.Routes[i]
		if r.Model == "" {
			return nil, fieldErr("routes[%d].model", i)("is required")
		}
		if _, ok := c.models[r.Model]; !ok {
			return nil, fieldErr("routes[%d].model", i)("references unknown model %q", r.Model)
		}
		if _, dup := c.routes[r.Model]; dup {
			return nil, fieldErr("routes[%d].model", i)("model %q already has a route", r.Model)
		}
		if r.Strategy != "" && r.Strategy != StrategyOrdered {
			return nil, fieldErr("routes[%d].strategy", i)("unknown strategy %q (known: %s)", r.Strategy, StrategyOrdered)
		}
		if len(r.Targets) == 0 {
			return nil, fieldErr("routes[%d].targets", i)("needs at least one target")
		}
		for j, tg := range r.Targets {
			if _, ok := c.providers[tg.Provider]; !ok {
				return nil, fieldErr("routes[%d].targets[%d].provider", i, j)("references unknown provider %q", tg.Provider)
			}
		}
		c.routes[r.Model] = r
	}
	for _, m := range t.Models {
		if _, ok := c.routes[m.ID]; !ok {
			return nil, fieldErr("models[%s]", m.ID)("has no route, so no request for it could be served")
		}
	}
	for i := range t.Keys {
		k := &t.Keys[i]
		if k.ID == "" {
			return nil, fieldErr("keys[%d].id", i)("is required")
		}
		hexHash, ok := strings.CutPrefix(k.Hash, "sha256:")
		if !ok || len(hexHash) != 64 || strings.Trim(strings.ToLower(hexHash), "0123456789abcdef") != "" {
			return nil, fieldErr("keys[%d].hash", i)(`must be "sha256:" followed by 64 hex digits`)
		}
		norm := strings.ToLower(hexHash)
		if _, dup := c.keys[norm]; dup {
			return nil, fieldErr("keys[%d].hash", i)("duplicate key hash")
		}
		c.keys[norm] = k
	}
	return c, nil
}

func checkBaseURL(raw string) error {
	if raw == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New(`must start with "http://" or "https://"`)
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials; use api_key or api_key_env")
	}
	return nil
}

// Table returns the table c was compiled from. Callers must not modify it.
func (c *Compiled) Table() *Table { return c.table }

// Revision returns the table's revision.
func (c *Compiled) Revision() uint64 { return c.table.Revision }

// Model returns the model with the given ID.
func (c *Compiled) Model(id string) (*Model, bool) {
	m, ok := c.models[id]
	return m, ok
}

// Models returns every model in table order.
func (c *Compiled) Models() []Model { return c.table.Models }

// Route returns the route for a model ID.
func (c *Compiled) Route(model string) (*Route, bool) {
	r, ok := c.routes[model]
	return r, ok
}

// Provider returns the provider with the given ID.
func (c *Compiled) Provider(id string) (*Provider, bool) {
	p, ok := c.providers[id]
	return p, ok
}

// RequireKeys reports whether the table carries key hashes, so that
// requests must present a key.
func (c *Compiled) RequireKeys() bool { return len(c.keys) > 0 }

// KeyByHash returns the key whose lowercase hex SHA-256 is hexHash.
func (c *Compiled) KeyByHash(hexHash string) (*Key, bool) {
	k, ok := c.keys[hexHash]
	return k, ok
}
