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

	"github.com/meridian-mesh/meridian/shared/cow"
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
	// They are pointers so that a table patched from another (one route
	// edited) shares every unchanged route and copies R pointers, not R
	// routes; a route is never modified once it is in a table.
	Routes []*Route `yaml:"routes" json:"routes"`
	// Keys are the client API keys the edge accepts, as hashes. Whether
	// an edge demands one is its auth mode (edge config `auth`), never
	// the length of this list: in mode "keys" an empty list refuses
	// every request.
	// They are pointers for the reason Routes are.
	Keys []*Key `yaml:"keys,omitempty" json:"keys,omitempty"`

	// The fleet, for the router (edge/router). A table from a config
	// file usually leaves these empty: the edge then routes as one node.

	// Regions are the places nodes and providers run in, with their
	// coordinates for nearest routing.
	Regions []Region `yaml:"regions,omitempty" json:"regions,omitempty"`
	// Nodes are the fleet's edges and the region each runs in.
	Nodes []Node `yaml:"nodes,omitempty" json:"nodes,omitempty"`
	// Placements put models on nodes, or on a number of a region's nodes.
	Placements []Placement `yaml:"placements,omitempty" json:"placements,omitempty"`
	// Prices are what providers charge, for the cheapest strategy and
	// price caps.
	Prices []Price `yaml:"prices,omitempty" json:"prices,omitempty"`
	// Tenants carry the policies of the keys that bill to them.
	Tenants []Tenant `yaml:"tenants,omitempty" json:"tenants,omitempty"`
}

// Region is a place nodes and providers run in.
type Region struct {
	ID string `yaml:"id" json:"id"`
	// Latitude and Longitude locate the region, degrees.
	Latitude  float64 `yaml:"latitude" json:"latitude"`
	Longitude float64 `yaml:"longitude" json:"longitude"`
}

// Node is one edge of the fleet.
type Node struct {
	ID string `yaml:"id" json:"id"`
	// Region is a Region.ID.
	Region string `yaml:"region" json:"region"`
	// Revoked marks a node whose identity the control plane revoked:
	// peers refuse its links. Only the control plane sets it.
	Revoked bool `yaml:"revoked,omitempty" json:"revoked,omitempty"`
	// Joined is when the node last joined the fleet; peers refuse its
	// certificates issued before then. Zero for a node that never
	// joined (static certificates).
	Joined time.Time `yaml:"-" json:"joined,omitzero"`
}

// Placement asks for a model to run on one node, or on Desired nodes of
// a region. Which nodes of the region is decided by rendezvous hashing
// of the model and node IDs (Compiled.PlacedOn), so every edge computes
// the same answer without asking anyone.
type Placement struct {
	// Model is a Model.ID; the model must have a Local source.
	Model string `yaml:"model" json:"model"`
	// Node is a Node.ID, or empty when Region is set.
	Node string `yaml:"node,omitempty" json:"node,omitempty"`
	// Region is a Region.ID, or empty when Node is set.
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
	// Desired is the number of the region's nodes to run the model on.
	// Zero means 1.
	Desired int `yaml:"desired,omitempty" json:"desired,omitempty"`
}

// Price is what a provider charges for a model, USD per 1M tokens.
type Price struct {
	Provider string  `yaml:"provider" json:"provider"`
	Model    string  `yaml:"model" json:"model"`
	Input    float64 `yaml:"input" json:"input"`
	Output   float64 `yaml:"output" json:"output"`
	// Cached is what an answer served from an edge's cache costs, per
	// 1M tokens, prompt and completion alike. Zero (unset) means free:
	// a hit pays no provider, so unless an operator prices hits (to
	// recover the edge's cost, or to share savings), the tenant pays
	// nothing for them.
	Cached float64 `yaml:"cached,omitempty" json:"cached,omitempty"`
	// BatchInput and BatchOutput are what a batch line or async request
	// costs, per 1M tokens. Zero (unset) means Input or Output: batch
	// work pays the normal price unless an operator discounts it.
	BatchInput  float64 `yaml:"batch_input,omitempty" json:"batch_input,omitempty"`
	BatchOutput float64 `yaml:"batch_output,omitempty" json:"batch_output,omitempty"`
}

// ForBatch is the price of a batch line: BatchInput and BatchOutput
// where set, Input and Output where not.
func (p Price) ForBatch() Price {
	if p.BatchInput > 0 {
		p.Input = p.BatchInput
	}
	if p.BatchOutput > 0 {
		p.Output = p.BatchOutput
	}
	return p
}

// Cache modes (CachePolicy.Mode).
const (
	// CacheAuto, the default, caches deterministic requests only:
	// temperature 0, or a seed.
	CacheAuto = ""
	// CacheForce caches every chat request, sampled or not.
	CacheForce = "force"
	// CacheOff never caches.
	CacheOff = "off"
)

// CachePolicy is a route's or a tenant's say over the edge cache.
type CachePolicy struct {
	// Mode is CacheAuto, CacheForce or CacheOff.
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty"`
	// TTL is how long an answer is served from the cache; zero means
	// the edge's default.
	TTL time.Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// Similarity is the cosine similarity of the last user turn above
	// which the semantic cache answers; zero turns it off.
	Similarity float64 `yaml:"similarity,omitempty" json:"similarity,omitempty"`
}

// validate reports a policy no edge can apply.
func (p *CachePolicy) validate(field func(string, ...any) error) error {
	switch {
	case p.Mode != CacheAuto && p.Mode != CacheForce && p.Mode != CacheOff:
		return field(`cache mode must be "force" or "off" (empty caches deterministic requests only), not %q`, p.Mode)
	case p.TTL < 0:
		return field("cache ttl must not be negative")
	case !(p.Similarity >= 0 && p.Similarity <= 1):
		return field("cache similarity must be between 0 and 1")
	}
	return nil
}

// Tenant is a customer whose keys share policies.
type Tenant struct {
	ID string `yaml:"id" json:"id"`
	// AllowedRegions are the Region.IDs its requests may be served in;
	// empty means anywhere.
	AllowedRegions []string `yaml:"allowed_regions,omitempty" json:"allowed_regions,omitempty"`
	// RPM and TPM limit all its keys together, per minute across the
	// fleet; 0 means no limit.
	RPM int64 `yaml:"rpm,omitempty" json:"rpm,omitempty"`
	TPM int64 `yaml:"tpm,omitempty" json:"tpm,omitempty"`
	// Budget is what the tenant may spend per BudgetPeriod, USD; 0 means
	// no limit.
	Budget float64 `yaml:"budget,omitempty" json:"budget,omitempty"`
	// BudgetPeriod is "month" (also when empty), "week" or "day", UTC.
	BudgetPeriod string `yaml:"budget_period,omitempty" json:"budget_period,omitempty"`
	// HardLimit refuses the tenant's requests once Budget is spent.
	HardLimit bool `yaml:"hard_limit,omitempty" json:"hard_limit,omitempty"`
	// Exhausted is set by the control plane, never written by hand: the
	// tenant spent its Budget in the current period under HardLimit, so
	// edges refuse its requests (429 insufficient_quota) until
	// ExhaustedUntil, the period's end.
	Exhausted      bool      `yaml:"exhausted,omitempty" json:"exhausted,omitempty"`
	ExhaustedUntil time.Time `yaml:"exhausted_until,omitempty" json:"exhausted_until,omitempty"`
	// Cache is the tenant's cache policy (see Route.Cache for how the
	// two combine).
	Cache CachePolicy `yaml:"cache,omitempty" json:"cache,omitempty"`
	// WebhookAllow lists the hosts ("hooks.example.com",
	// "*.example.com") and CIDRs a batch's or async job's callback URL
	// may name (shared/webhook); empty refuses every callback.
	WebhookAllow []string `yaml:"webhook_allow,omitempty" json:"webhook_allow,omitempty"`
	// WebhookSecret signs the tenant's webhook calls ("whsec_<base64>"),
	// resolved on the edge from the tenant's webhook_secret_ref; empty
	// when it did not resolve, which refuses callbacks too.
	WebhookSecret Secret `yaml:"-" json:"-"`
}

// LocalSource says where a model that nodes run themselves comes from.
type LocalSource struct {
	// GGUF is the path of a GGUF file on the edge.
	GGUF string `yaml:"gguf,omitempty" json:"gguf,omitempty"`
	// Quantization is applied when creating from GGUF, such as "q8_0";
	// empty keeps the file's.
	Quantization string `yaml:"quantization,omitempty" json:"quantization,omitempty"`
	// Ollama is the model's reference in Ollama's registry, such as
	// "llama3.2:1b", pulled when absent.
	Ollama string `yaml:"ollama,omitempty" json:"ollama,omitempty"`
}

// EngineName is the model's name in the local engine: its Ollama
// reference when pulled, else the model ID.
func (m *Model) EngineName() string {
	if m.Local != nil && m.Local.Ollama != "" {
		return m.Local.Ollama
	}
	return m.ID
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
	// Kind is the wire format: "openai", "anthropic", "gemini",
	// "ollama", "azure", "bedrock" or "vertex" (cloud.go); or "local",
	// the node's own engine. A preset sets it.
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// BaseURL is the API root including its version path, for example
	// "https://api.example.com/v1" (Ollama's has none). A preset sets it.
	// Only operators set it; a request never can.
	BaseURL string `yaml:"base_url,omitempty" json:"base_url,omitempty"`
	// Region is the Region.ID where the provider processes requests;
	// empty means unknown, and such a provider never serves a route
	// that restricts regions.
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
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
	// APIVersion is Azure OpenAI's api-version query parameter, such as
	// "2024-10-21"; empty means DefaultAzureAPIVersion. Only kind azure.
	APIVersion string `yaml:"api_version,omitempty" json:"api_version,omitempty"`
	// Project is the Google Cloud project of a vertex provider; required
	// for kind vertex, refused for the others.
	Project string `yaml:"project,omitempty" json:"project,omitempty"`
	// CloudRegion is the cloud's own name for where a bedrock or vertex
	// provider runs ("us-east-1", "europe-west4", "global"); empty means
	// Region, for fleets that name their regions after the cloud's.
	CloudRegion string `yaml:"cloud_region,omitempty" json:"cloud_region,omitempty"`
	// Auth is how an azure provider proves itself: AuthAPIKey (the
	// default; the key goes in the api-key header) or AuthEntra (the
	// credential is a Microsoft Entra ID access token, sent as a Bearer
	// token). Other kinds have one way each and leave it empty.
	Auth string `yaml:"auth,omitempty" json:"auth,omitempty"`
	// TokenFile, for auth entra, is a file holding the access token; it
	// is read again whenever it changes, so whatever renews the token
	// (a sidecar, a workload identity agent) needs no restart. When
	// empty, APIKey holds the token as it was when the table loaded.
	TokenFile string `yaml:"token_file,omitempty" json:"token_file,omitempty"`
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
	// ContextLength is the model's context window, tokens; zero means
	// unknown, and nothing is checked.
	ContextLength int `yaml:"context_length,omitempty" json:"context_length,omitempty"`
	// AllowedRegions are the Region.IDs the model may be served in;
	// empty means anywhere.
	AllowedRegions []string `yaml:"allowed_regions,omitempty" json:"allowed_regions,omitempty"`
	// Local, when set, lets nodes run the model themselves, wherever it
	// is placed.
	Local *LocalSource `yaml:"local,omitempty" json:"local,omitempty"`
}

// Model capabilities.
const (
	CapVision = "vision"
	CapTools  = "tools"
	// CapJSON is JSON mode: response_format json_object or json_schema.
	CapJSON = "json"
)

// Capabilities lists every known capability.
var Capabilities = []string{CapVision, CapTools, CapJSON}

// Has reports whether m declares capability c, or declares none.
func (m *Model) Has(c string) bool {
	return len(m.Capabilities) == 0 || slices.Contains(m.Capabilities, c)
}

// Route strategies: how the router orders a request's candidates (see
// edge/router for each one's exact rule).
const (
	// StrategyOrdered tries the route's targets in the order written,
	// then the fleet's placed copies (local, then peers, nearest first).
	StrategyOrdered = "ordered"
	// StrategyNearest orders by great-circle distance from the client,
	// then by link RTT.
	StrategyNearest = "nearest"
	// StrategyFastest orders by smoothed time to first token.
	StrategyFastest = "fastest"
	// StrategyCheapest orders by price for the estimated tokens.
	StrategyCheapest = "cheapest"
	// StrategyWeighted picks the first target at random by weight.
	StrategyWeighted = "weighted"
	// StrategyLeastBusy orders by requests in flight and queued.
	StrategyLeastBusy = "least-busy"
	// StrategyLocalFirst tries this node, then the nearest peer, then
	// the route's providers in order.
	StrategyLocalFirst = "local-first"
)

// Strategies lists every strategy.
var Strategies = []string{StrategyOrdered, StrategyNearest, StrategyFastest, StrategyCheapest, StrategyWeighted, StrategyLeastBusy, StrategyLocalFirst}

// Route says which targets serve a model.
type Route struct {
	// Model is the Model.ID this route serves.
	Model string `yaml:"model" json:"model"`
	// Strategy picks the order of targets. Empty means "ordered".
	Strategy string `yaml:"strategy,omitempty" json:"strategy,omitempty"`
	// Targets are the providers that serve the model. A route of a
	// model placed in the fleet may list none.
	Targets []Target `yaml:"targets" json:"targets"`
	// AllowedRegions are the Region.IDs requests may be served in (data
	// residency); empty means anywhere.
	AllowedRegions []string `yaml:"allowed_regions,omitempty" json:"allowed_regions,omitempty"`
	// MaxPrice is the highest acceptable price per 1M tokens, input plus
	// output, USD; zero means no cap. A provider without a price is
	// never under a cap.
	MaxPrice float64 `yaml:"max_price,omitempty" json:"max_price,omitempty"`
	// Cache is the route's cache policy. With its tenant's: "off" on
	// either side wins; else the route's mode, TTL and similarity win
	// where set, the tenant's fill in the rest.
	Cache CachePolicy `yaml:"cache,omitempty" json:"cache,omitempty"`
}

// Target is one place a model can run.
type Target struct {
	// Provider is a Provider.ID.
	Provider string `yaml:"provider" json:"provider"`
	// Model is the provider's own name for the model. Empty means the
	// route's model name.
	Model string `yaml:"model,omitempty" json:"model,omitempty"`
	// Weight is the target's share under the weighted strategy; zero
	// means 1.
	Weight int `yaml:"weight,omitempty" json:"weight,omitempty"`
}

// Key is a client API key, held only as a hash.
type Key struct {
	// ID names the key in logs and metrics; it is not secret.
	ID string `yaml:"id" json:"id"`
	// Hash is "sha256:" followed by the hex SHA-256 of the key.
	Hash string `yaml:"hash" json:"hash"`
	// Tenant is the Tenant.ID the key bills to, or empty.
	Tenant string `yaml:"tenant,omitempty" json:"tenant,omitempty"`
	// AllowedModels are the Model.IDs the key may call; empty means all.
	AllowedModels []string `yaml:"allowed_models,omitempty" json:"allowed_models,omitempty"`
	// AllowedRegions are the Region.IDs its requests may be served in,
	// on top of its tenant's; empty means anywhere.
	AllowedRegions []string `yaml:"allowed_regions,omitempty" json:"allowed_regions,omitempty"`
	// RPM and TPM limit the key's requests and tokens per minute across
	// the fleet; 0 means no limit.
	RPM int64 `yaml:"rpm,omitempty" json:"rpm,omitempty"`
	TPM int64 `yaml:"tpm,omitempty" json:"tpm,omitempty"`
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time `yaml:"expires_at,omitempty" json:"expires_at,omitempty"`
	// Disabled keys are refused like unknown ones.
	Disabled bool `yaml:"disabled,omitempty" json:"disabled,omitempty"`
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
	// routes, keys and tenants change without the rest of the table
	// (Patch): copy-on-write, so a patch costs what it changes.
	routes  cow.Map[string, *Route]
	keys    cow.Map[string, *Key]
	tenants cow.Map[string, *Tenant]
	regions map[string]*Region
	nodes   map[string]*Node
	prices  map[priceKey]*Price
	// placed is, per model ID, the IDs of the nodes it is placed on,
	// sorted.
	placed map[string][]string
	// b holds routes, keys and tenants while Compile builds them.
	b *building
	// sorted is true when the table's routes, keys and tenants are in
	// ID order, as tables from the control plane are: Patch finds
	// entries by binary search, so it needs them sorted.
	sorted bool
}

type building struct {
	routes  map[string]*Route
	keys    map[string]*Key
	tenants map[string]*Tenant
}

type priceKey struct{ provider, model string }

// Compile validates t and builds its indexes. It fills providers' kinds
// and base URLs from their presets, in t itself. The caller must not
// modify t afterwards.
func Compile(t *Table) (*Compiled, error) {
	c := &Compiled{
		table:     t,
		providers: make(map[string]*Provider, len(t.Providers)),
		models:    make(map[string]*Model, len(t.Models)),
		regions:   make(map[string]*Region, len(t.Regions)),
		nodes:     make(map[string]*Node, len(t.Nodes)),
		b: &building{
			routes:  make(map[string]*Route, len(t.Routes)),
			keys:    make(map[string]*Key, len(t.Keys)),
			tenants: make(map[string]*Tenant, len(t.Tenants)),
		},
		prices: make(map[priceKey]*Price, len(t.Prices)),
		placed: make(map[string][]string),
	}
	if err := c.compileFleet(t); err != nil {
		return nil, err
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
		if err := checkCloud(p, fmt.Sprintf("providers[%d]", i)); err != nil {
			return nil, err
		}
		if p.Kind == KindLocal {
			if p.BaseURL != "" || p.APIKey != "" || p.APIKeyEnv != "" {
				return nil, fieldErr("providers[%d].base_url", i)("must be empty for kind %q: the local engine is the node's own", KindLocal)
			}
		} else if p.Kind == KindPeer {
			if _, _, err := ParsePeerURL(p.BaseURL); err != nil {
				return nil, fieldErr("providers[%d].base_url", i)("%v", err)
			}
		} else if err := fillCloudBaseURL(p); err != nil {
			return nil, fieldErr("providers[%d].base_url", i)("%v", err)
		} else if err := checkBaseURL(p.BaseURL); err != nil {
			return nil, fieldErr("providers[%d].base_url", i)("%v", err)
		}
		if p.Region != "" && c.regions[p.Region] == nil {
			return nil, fieldErr("providers[%d].region", i)("references unknown region %q", p.Region)
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
			if !slices.Contains(Capabilities, cp) {
				return nil, fieldErr("models[%d].capabilities[%d]", i, j)("unknown capability %q (known: %s)", cp, strings.Join(Capabilities, ", "))
			}
		}
		if m.ContextLength < 0 {
			return nil, fieldErr("models[%d].context_length", i)("must not be negative")
		}
		if err := c.checkRegions(fmt.Sprintf("models[%d].allowed_regions", i), m.AllowedRegions); err != nil {
			return nil, err
		}
		if m.Local != nil && m.Local.GGUF == "" && m.Local.Ollama == "" {
			return nil, fieldErr("models[%d].local", i)("needs a source: gguf or ollama")
		}
		c.models[m.ID] = m
	}
	if err := c.compilePlacements(t); err != nil {
		return nil, err
	}
	for i := range t.Prices {
		p := &t.Prices[i]
		k := priceKey{p.Provider, p.Model}
		switch {
		case c.providers[p.Provider] == nil && p.Provider != KindLocal:
			return nil, fieldErr("prices[%d].provider", i)("references unknown provider %q", p.Provider)
		case c.prices[k] != nil:
			return nil, fieldErr("prices[%d]", i)("duplicate price for %s/%s", p.Provider, p.Model)
		case !(p.Input >= 0) || !(p.Output >= 0) || !(p.Cached >= 0) || !(p.BatchInput >= 0) || !(p.BatchOutput >= 0):
			return nil, fieldErr("prices[%d]", i)("input, output, cached and batch prices must be numbers, zero or more")
		}
		c.prices[k] = p
	}
	for i, r := range t.Routes {
		if r == nil {
			return nil, fieldErr("routes[%d]", i)("is empty")
		}
		if err := c.checkRoute(i, r); err != nil {
			return nil, err
		}
		if _, dup := c.b.routes[r.Model]; dup {
			return nil, fieldErr("routes[%d].model", i)("model %q already has a route", r.Model)
		}
		c.b.routes[r.Model] = r
	}
	for _, m := range t.Models {
		if _, ok := c.b.routes[m.ID]; ok {
			continue
		}
		if len(c.placed[m.ID]) == 0 {
			return nil, fieldErr("models[%s]", m.ID)("has no route and no placement, so no request for it could be served")
		}
		// A placed model needs no route: the fleet's copies serve it.
		c.b.routes[m.ID] = &Route{Model: m.ID}
	}
	for i, k := range t.Keys {
		if k == nil {
			return nil, fieldErr("keys[%d]", i)("is empty")
		}
		norm, err := c.checkKey(i, k)
		if err != nil {
			return nil, err
		}
		if _, dup := c.b.keys[norm]; dup {
			return nil, fieldErr("keys[%d].hash", i)("duplicate key hash")
		}
		c.b.keys[norm] = k
	}
	c.routes, c.keys, c.tenants = cow.From(c.b.routes), cow.From(c.b.keys), cow.From(c.b.tenants)
	c.b = nil
	c.sorted = slices.IsSortedFunc(t.Routes, func(a, b *Route) int { return strings.Compare(a.Model, b.Model) }) &&
		slices.IsSortedFunc(t.Keys, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) }) &&
		slices.IsSortedFunc(t.Tenants, func(a, b Tenant) int { return strings.Compare(a.ID, b.ID) })
	return c, nil
}

// tenant looks a tenant up while compiling or patching.
func (c *Compiled) tenant(id string) (*Tenant, bool) {
	if c.b != nil {
		t, ok := c.b.tenants[id]
		return t, ok
	}
	return c.tenants.Get(id)
}

// checkRoute checks route i against the compiled providers, models,
// placements and regions.
func (c *Compiled) checkRoute(i int, r *Route) error {
	if r.Model == "" {
		return fieldErr("routes[%d].model", i)("is required")
	}
	if _, ok := c.models[r.Model]; !ok {
		return fieldErr("routes[%d].model", i)("references unknown model %q", r.Model)
	}
	if r.Strategy != "" && !slices.Contains(Strategies, r.Strategy) {
		return fieldErr("routes[%d].strategy", i)("unknown strategy %q (known: %s)", r.Strategy, strings.Join(Strategies, ", "))
	}
	if len(r.Targets) == 0 && len(c.placed[r.Model]) == 0 {
		return fieldErr("routes[%d].targets", i)("needs at least one target, or a placement of model %q", r.Model)
	}
	for j, tg := range r.Targets {
		if _, ok := c.providers[tg.Provider]; !ok {
			return fieldErr("routes[%d].targets[%d].provider", i, j)("references unknown provider %q", tg.Provider)
		}
		if tg.Weight < 0 {
			return fieldErr("routes[%d].targets[%d].weight", i, j)("must not be negative")
		}
	}
	if err := c.checkRegionsAt("routes[%d].allowed_regions", i, r.AllowedRegions); err != nil {
		return err
	}
	if r.MaxPrice < 0 || r.MaxPrice != r.MaxPrice {
		return fieldErr("routes[%d].max_price", i)("must be a number, zero or more")
	}
	return r.Cache.validate(func(msg string, margs ...any) error { return fieldErr("routes[%d].cache", i)(msg, margs...) })
}

// checkKey checks key i against the compiled tenants and regions, and
// returns its hash's hex digits, lowercase.
func (c *Compiled) checkKey(i int, k *Key) (string, error) {
	if k.ID == "" {
		return "", fieldErr("keys[%d].id", i)("is required")
	}
	hexHash, ok := strings.CutPrefix(k.Hash, "sha256:")
	if !ok || len(hexHash) != 64 || strings.Trim(strings.ToLower(hexHash), "0123456789abcdef") != "" {
		return "", fieldErr("keys[%d].hash", i)(`must be "sha256:" followed by 64 hex digits`)
	}
	if k.Tenant != "" {
		if _, ok := c.tenant(k.Tenant); !ok {
			return "", fieldErr("keys[%d].tenant", i)("references unknown tenant %q", k.Tenant)
		}
	}
	if err := c.checkRegionsAt("keys[%d].allowed_regions", i, k.AllowedRegions); err != nil {
		return "", err
	}
	if k.RPM < 0 || k.TPM < 0 {
		return "", fieldErr("keys[%d]", i)("rpm and tpm must not be negative")
	}
	return strings.ToLower(hexHash), nil
}

// checkTenant checks tenant i against the compiled regions.
func (c *Compiled) checkTenant(i int, tn *Tenant) error {
	if tn.ID == "" {
		return fieldErr("tenants[%d].id", i)("is required")
	}
	if err := c.checkRegionsAt("tenants[%d].allowed_regions", i, tn.AllowedRegions); err != nil {
		return err
	}
	switch {
	case tn.RPM < 0 || tn.TPM < 0:
		return fieldErr("tenants[%d]", i)("rpm and tpm must not be negative")
	case !(tn.Budget >= 0):
		return fieldErr("tenants[%d].budget", i)("must be a number of USD, 0 for none")
	}
	switch tn.BudgetPeriod {
	case "", "month", "week", "day":
	default:
		return fieldErr("tenants[%d].budget_period", i)(`must be "month", "week" or "day", not %q`, tn.BudgetPeriod)
	}
	return tn.Cache.validate(func(msg string, margs ...any) error { return fieldErr("tenants[%d].cache", i)(msg, margs...) })
}

// checkRegionsAt is checkRegions with the field's name built only for an
// error: format takes the index i.
func (c *Compiled) checkRegionsAt(format string, i int, regions []string) error {
	for _, r := range regions {
		if c.regions[r] == nil {
			return c.checkRegions(fmt.Sprintf(format, i), regions)
		}
	}
	return nil
}

// compileFleet indexes regions, nodes and tenants, which the rest of the
// table references.
func (c *Compiled) compileFleet(t *Table) error {
	for i := range t.Regions {
		r := &t.Regions[i]
		switch {
		case r.ID == "":
			return fieldErr("regions[%d].id", i)("is required")
		case c.regions[r.ID] != nil:
			return fieldErr("regions[%d].id", i)("duplicate region %q", r.ID)
		case !(r.Latitude >= -90 && r.Latitude <= 90) || !(r.Longitude >= -180 && r.Longitude <= 180):
			return fieldErr("regions[%d]", i)("latitude must be within ±90 and longitude within ±180")
		}
		c.regions[r.ID] = r
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		switch {
		case n.ID == "":
			return fieldErr("nodes[%d].id", i)("is required")
		case c.nodes[n.ID] != nil:
			return fieldErr("nodes[%d].id", i)("duplicate node %q", n.ID)
		case c.regions[n.Region] == nil:
			return fieldErr("nodes[%d].region", i)("references unknown region %q", n.Region)
		}
		c.nodes[n.ID] = n
	}
	for i := range t.Tenants {
		tn := &t.Tenants[i]
		if err := c.checkTenant(i, tn); err != nil {
			return err
		}
		if c.b.tenants[tn.ID] != nil {
			return fieldErr("tenants[%d].id", i)("duplicate tenant %q", tn.ID)
		}
		c.b.tenants[tn.ID] = tn
	}
	return nil
}

// compilePlacements resolves placements to nodes, once models are known.
func (c *Compiled) compilePlacements(t *Table) error {
	for i := range t.Placements {
		p := &t.Placements[i]
		m := c.models[p.Model]
		switch {
		case m == nil:
			return fieldErr("placements[%d].model", i)("references unknown model %q", p.Model)
		case m.Local == nil:
			return fieldErr("placements[%d].model", i)("model %q has no local source, so no node can run it", p.Model)
		case (p.Node == "") == (p.Region == ""):
			return fieldErr("placements[%d]", i)("names a node or a region, not both")
		case p.Desired < 0:
			return fieldErr("placements[%d].desired", i)("must not be negative")
		}
		if p.Node != "" {
			if c.nodes[p.Node] == nil {
				return fieldErr("placements[%d].node", i)("references unknown node %q", p.Node)
			}
			c.place(p.Model, p.Node)
			continue
		}
		if c.regions[p.Region] == nil {
			return fieldErr("placements[%d].region", i)("references unknown region %q", p.Region)
		}
		for _, n := range rendezvous(p.Model, p.Region, t.Nodes, max(p.Desired, 1)) {
			c.place(p.Model, n)
		}
	}
	for _, ids := range c.placed {
		slices.Sort(ids)
	}
	return nil
}

func (c *Compiled) place(model, node string) {
	if !slices.Contains(c.placed[model], node) {
		c.placed[model] = append(c.placed[model], node)
	}
}

// rendezvous picks n of a region's nodes for a model: those with the
// highest hash of (model, node). Every edge picks the same ones, and
// adding or removing a node moves only the placements it wins or held.
func rendezvous(model, region string, nodes []Node, n int) []string {
	type scored struct {
		id    string
		score uint64
	}
	var in []scored
	for _, nd := range nodes {
		if nd.Region == region {
			in = append(in, scored{nd.ID, fnv64(model, nd.ID)})
		}
	}
	slices.SortFunc(in, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]string, 0, min(n, len(in)))
	for i := 0; i < len(in) && i < n; i++ {
		out = append(out, in[i].id)
	}
	return out
}

// fnv64 is FNV-1a over a, a zero byte and b.
func fnv64(a, b string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(a); i++ {
		h = (h ^ uint64(a[i])) * 1099511628211
	}
	h *= 1099511628211
	for i := 0; i < len(b); i++ {
		h = (h ^ uint64(b[i])) * 1099511628211
	}
	return h
}

// checkRegions checks an allowed-regions list against the table's
// regions.
func (c *Compiled) checkRegions(field string, regions []string) error {
	for j, r := range regions {
		if c.regions[r] == nil {
			return fieldErr("%s[%d]", field, j)("references unknown region %q", r)
		}
	}
	return nil
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
	return c.routes.Get(model)
}

// Provider returns the provider with the given ID.
func (c *Compiled) Provider(id string) (*Provider, bool) {
	p, ok := c.providers[id]
	return p, ok
}

// Region returns the region with the given ID.
func (c *Compiled) Region(id string) (*Region, bool) {
	r, ok := c.regions[id]
	return r, ok
}

// Node returns the fleet node with the given ID.
func (c *Compiled) Node(id string) (*Node, bool) {
	n, ok := c.nodes[id]
	return n, ok
}

// Tenant returns the tenant with the given ID.
func (c *Compiled) Tenant(id string) (*Tenant, bool) {
	return c.tenants.Get(id)
}

// Price returns what provider charges for model, per 1M tokens.
func (c *Compiled) Price(provider, model string) (*Price, bool) {
	p, ok := c.prices[priceKey{provider, model}]
	return p, ok
}

// PriceFor returns what provider charges for a request for model (a
// Model.ID) that it serves under the name upstream: the price written
// for the model's ID (what the control plane's prices reference), else
// for the upstream name. Routing and usage records both price this way.
func (c *Compiled) PriceFor(provider, model, upstream string) (*Price, bool) {
	if p, ok := c.prices[priceKey{provider, model}]; ok {
		return p, true
	}
	if upstream != "" && upstream != model {
		return c.Price(provider, upstream)
	}
	return nil, false
}

// PlacedOn returns the IDs of the nodes a model is placed on, sorted.
// Callers must not modify it.
func (c *Compiled) PlacedOn(model string) []string { return c.placed[model] }

// PlacedHere returns the models placed on a node, in table order.
func (c *Compiled) PlacedHere(node string) []*Model {
	var out []*Model
	for i := range c.table.Models {
		m := &c.table.Models[i]
		if slices.Contains(c.placed[m.ID], node) {
			out = append(out, m)
		}
	}
	return out
}

// HasKeys reports whether the table carries any key hash. It is a fact
// about the table, not a policy: the edge's auth mode decides whether a
// key is required, and a table without keys never switches that off.
func (c *Compiled) HasKeys() bool { return c.keys.Len() > 0 }

// KeyByHash returns the key whose lowercase hex SHA-256 is hexHash.
func (c *Compiled) KeyByHash(hexHash string) (*Key, bool) {
	return c.keys.Get(hexHash)
}
