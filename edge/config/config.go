// Package config loads an edge node's configuration: defaults, then a YAML
// file, then MERIDIAN_* environment variables, then command-line flags,
// each overriding the one before.
//
// The static providers, models, routes and keys in the file are a
// table.Table, the same type the control plane fills, so an edge works on
// its own before any control plane exists and the request path is the same
// either way.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/geo"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"go.yaml.in/yaml/v3"
)

// Config is an edge node's configuration.
type Config struct {
	// NodeID names this node in logs, metrics and route headers.
	// Default: the host name.
	NodeID string `yaml:"node_id"`
	// Region is the region this node serves, such as "eu-west".
	// Default: "local".
	Region string `yaml:"region"`
	// Listen is the host:port the API listens on. Default:
	// "127.0.0.1:8080"; use ":8080" to listen on every interface.
	Listen string `yaml:"listen"`
	// MaxBodyBytes bounds a request body, in bytes; larger bodies get a
	// 413. Default: 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// BodyReadTimeout bounds reading a request body. Default: 30s.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout"`
	// StreamKeepAlive is the upstream silence, during a stream, after
	// which a keep-alive comment is sent to the client. Default: 15s.
	StreamKeepAlive time.Duration `yaml:"stream_keepalive"`
	// StreamWriteTimeout bounds each write of a stream to the client: a
	// client that stops reading for this long has its stream ended, its
	// upstream cancelled and its local-engine slot freed. Default: 30s.
	StreamWriteTimeout time.Duration `yaml:"stream_write_timeout"`
	// MaxInFlight bounds the API requests this edge serves at once;
	// beyond it a request gets a 503 with Retry-After in its client's
	// format. Default: 1024.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxConnections bounds the client connections the API listener
	// holds open at once; a connection beyond it is answered 503 with
	// Retry-After and closed before its request is read. Default: 4096.
	MaxConnections int `yaml:"max_connections"`
	// DrainTimeout is how long shutdown waits for in-flight requests and
	// streams to finish before closing them. Default: 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// LogLevel is "debug", "info", "warn" or "error". Default: "info",
	// which logs one line per request.
	LogLevel string `yaml:"log_level"`
	// LogFormat is "json" or "text". Default: "json".
	LogFormat string `yaml:"log_format"`

	// Auth is whether clients must present an API key: AuthKeys or
	// AuthNone. Empty derives it (see AuthMode): "keys" when the edge
	// follows a control plane or its static table lists a key, "none"
	// only for a standalone edge with no keys configured at all.
	Auth string `yaml:"auth"`

	// Gossip configures membership gossip with the other edges. Off
	// unless enabled: a single edge needs none.
	Gossip Gossip `yaml:"gossip"`

	// Local configures the node's own inference engine: a supervised
	// Ollama and the models placed on this node. Off unless enabled.
	Local engine.Config `yaml:"local"`

	// Link configures QUIC links to other edges. Off unless enabled.
	Link Link `yaml:"link"`

	// Control connects the edge to the control plane's NATS bus, which
	// delivers the routing table. Off unless nats_urls is set.
	Control Control `yaml:"control"`

	// Geo says how the edge finds where a client is: trusted headers
	// from trusted proxies, then a GeoIP database, then its own region.
	Geo geo.Config `yaml:"geo"`

	// Routing tunes the router's health checks.
	Routing Routing `yaml:"routing"`

	// Usage configures usage records and the exchange of limit reports.
	Usage Usage `yaml:"usage"`

	// Cache configures the answer cache; it is off unless max_bytes is
	// set.
	Cache Cache `yaml:"cache"`
	// Jobs configures the batch workers and webhook deliverer.
	Jobs Jobs `yaml:"jobs"`

	// Telemetry exports OpenTelemetry traces over OTLP/HTTP when an
	// endpoint is set (or OTEL_EXPORTER_OTLP_ENDPOINT is); off otherwise.
	Telemetry telemetry.Config `yaml:"telemetry"`

	// Table is the static routing table: providers, models, routes and
	// client key hashes. Use EffectiveTable, which adds the local
	// engine's routes.
	Table table.Table `yaml:",inline"`
}

// EffectiveTable returns the static table with the local engine added:
// a provider "local" of kind local when the table declares none, and for
// each placed model that no route serves, the model and a route to the
// local engine. So a placed model is routable under its own name with no
// further config, and a route written by hand always wins.
func (c *Config) EffectiveTable() table.Table {
	t := c.Table
	if !c.Local.Enabled {
		return t
	}
	t.Providers = slices.Clone(t.Providers)
	t.Models = slices.Clone(t.Models)
	t.Routes = slices.Clone(t.Routes)
	local := ""
	for _, p := range t.Providers {
		if p.Kind == table.KindLocal {
			local = p.ID
			break
		}
	}
	if local == "" {
		local = engine.ProviderID
		t.Providers = append(t.Providers, table.Provider{ID: local, Kind: table.KindLocal})
	}
	for _, m := range c.Local.Models {
		routed := slices.ContainsFunc(t.Routes, func(r *table.Route) bool { return r != nil && r.Model == m.Name })
		if routed {
			continue
		}
		if !slices.ContainsFunc(t.Models, func(tm table.Model) bool { return tm.ID == m.Name }) {
			t.Models = append(t.Models, table.Model{ID: m.Name, OwnedBy: "local"})
		}
		t.Routes = append(t.Routes, &table.Route{Model: m.Name, Targets: []table.Target{{Provider: local, Model: m.Name}}})
	}
	return t
}

// Auth modes, the values of Config.Auth.
const (
	// AuthKeys demands a key the routing table lists. A table that lists
	// none refuses every request: the edge closes, it never opens.
	AuthKeys = "keys"
	// AuthNone accepts requests without a key.
	AuthNone = "none"
)

// AuthMode returns the auth mode in force, and whether it was derived
// rather than written. Derived, it is AuthKeys as soon as anything could
// deliver keys (a control plane) or the static table lists one: a table
// without keys, from either source, must never be what opens the edge.
func (c *Config) AuthMode() (mode string, derived bool) {
	if c.Auth != "" {
		return c.Auth, false
	}
	if c.Control.Enabled() || len(c.Table.Keys) > 0 {
		return AuthKeys, true
	}
	return AuthNone, true
}

// Routing tunes the router (edge/router) and the gateway's failover.
type Routing struct {
	// BreakerThreshold is the consecutive retryable failures that open a
	// target's breaker. Default 5.
	BreakerThreshold int `yaml:"breaker_threshold"`
	// BreakerCooldown is how long an open breaker keeps its target out
	// of plans before one probe may try it. Default 10s.
	BreakerCooldown time.Duration `yaml:"breaker_cooldown"`
	// FailoverBudget caps the time one request spends on failed attempts
	// before it gives up. Default 30s.
	FailoverBudget time.Duration `yaml:"failover_budget"`
	// PeerTTFBFloor is the least time a request forwarded to a peer may
	// wait for its first byte; past the peer's budget (twice its p99-ish
	// time to first token, at least this) the next target is tried.
	// Default 1s.
	PeerTTFBFloor time.Duration `yaml:"peer_ttfb_floor"`
}

// Gossip is the edge's membership gossip (memberlist, over UDP and TCP).
type Gossip struct {
	// Enabled turns gossip on.
	Enabled bool `yaml:"enabled"`
	// Bind is the host:port gossip listens on. Default "0.0.0.0:7946";
	// port 0 picks a free one.
	Bind string `yaml:"bind"`
	// Advertise is the IP address other edges reach this one at. It is
	// required: guessing it picks the wrong interface on multi-homed hosts.
	Advertise string `yaml:"advertise"`
	// Seeds are host:port addresses of other edges to join through. The
	// node rejoins them periodically, so a partition heals.
	Seeds []string `yaml:"seeds"`
	// Cluster is the cluster name; edges with another name never join.
	// Default "meridian".
	Cluster string `yaml:"cluster"`
	// Profile is "lan", "wan" or "local": memberlist's timing profiles,
	// with Meridian's overrides. Default "lan".
	Profile string `yaml:"profile"`
	// Keys are the base64 gossip encryption keys (16, 24 or 32 bytes);
	// the first encrypts, all decrypt, which is how keys rotate.
	Keys []table.Secret `yaml:"keys"`
	// KeysEnv names an environment variable holding the keys, comma
	// separated; it wins over Keys.
	KeysEnv string `yaml:"keys_env"`
	// QUICAddr is the address peers reach this node's QUIC links at,
	// advertised in gossip. Default, with links on: advertise and the
	// port link.listen bound.
	QUICAddr string `yaml:"quic_addr"`
}

// DecodedKeys returns the gossip keys as bytes.
func (g *Gossip) DecodedKeys() ([][]byte, error) {
	out := make([][]byte, 0, len(g.Keys))
	for i, k := range g.Keys {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k.Reveal()))
		if err != nil {
			return nil, &table.FieldError{Field: fmt.Sprintf("gossip.keys[%d]", i), Msg: "is not base64"}
		}
		if n := len(b); n != 16 && n != 24 && n != 32 {
			return nil, &table.FieldError{Field: fmt.Sprintf("gossip.keys[%d]", i), Msg: fmt.Sprintf("decodes to %d bytes; want 16, 24 or 32", n)}
		}
		out = append(out, b)
	}
	return out, nil
}

func (g *Gossip) validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: "gossip." + field, Msg: fmt.Sprintf(format, args...)}
	}
	if !g.Enabled {
		return nil
	}
	if _, port, err := net.SplitHostPort(g.Bind); err != nil {
		return bad("bind", "must be host:port: %v", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return bad("bind", "port %q is not a number from 0 to 65535", port)
	}
	if net.ParseIP(g.Advertise) == nil {
		return bad("advertise", "must be this node's IP address as other edges reach it, got %q", g.Advertise)
	}
	switch g.Profile {
	case "lan", "wan", "local":
	default:
		return bad("profile", `must be "lan", "wan" or "local", got %q`, g.Profile)
	}
	for i, seed := range g.Seeds {
		if _, _, err := net.SplitHostPort(seed); err != nil {
			return bad(fmt.Sprintf("seeds[%d]", i), "must be host:port: %v", err)
		}
	}
	if len(g.Keys) == 0 {
		return bad("keys", "gossip is encrypted: give at least one key (keys or keys_env)")
	}
	_, err := g.DecodedKeys()
	return err
}

// DefaultConfig returns the configuration used where nothing is set.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "edge"
	}
	return Config{
		NodeID:             host,
		Region:             "local",
		Listen:             "127.0.0.1:8080",
		MaxBodyBytes:       4 << 20,
		BodyReadTimeout:    30 * time.Second,
		StreamKeepAlive:    15 * time.Second,
		StreamWriteTimeout: 30 * time.Second,
		MaxInFlight:        1024,
		MaxConnections:     4096,
		DrainTimeout:       30 * time.Second,
		LogLevel:           "info",
		LogFormat:          "json",
		Gossip:             Gossip{Bind: "0.0.0.0:7946", Cluster: "meridian", Profile: "lan"},
		Local:              engine.DefaultConfig(),
		Link:               DefaultLink(),
		Control:            DefaultControl(),
		Geo:                geo.DefaultConfig(),
		Usage:              DefaultUsage(),
		Cache:              DefaultCache(),
		Jobs:               DefaultJobs(),
		Routing:            Routing{BreakerThreshold: 5, BreakerCooldown: 10 * time.Second, FailoverBudget: 30 * time.Second, PeerTTFBFloor: time.Second},
	}
}

// Validate checks every field and the static table. The error names the
// field at fault.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if c.NodeID == "" {
		return bad("node_id", "is required")
	}
	if c.Region == "" {
		return bad("region", "is required")
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "must be host:port: %v", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return bad("listen", "port %q is not a number from 0 to 65535", port)
	}
	if err := c.Telemetry.Validate(); err != nil {
		return err
	}
	if c.MaxBodyBytes < 1024 {
		return bad("max_body_bytes", "must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.BodyReadTimeout <= 0 {
		return bad("body_read_timeout", "must be positive")
	}
	if c.StreamKeepAlive < 0 {
		return bad("stream_keepalive", "must not be negative (0 turns keep-alives off)")
	}
	if c.StreamWriteTimeout <= 0 {
		return bad("stream_write_timeout", "must be positive")
	}
	if c.MaxInFlight < 1 {
		return bad("max_in_flight", "must be at least 1, got %d", c.MaxInFlight)
	}
	if c.MaxConnections < 1 {
		return bad("max_connections", "must be at least 1, got %d", c.MaxConnections)
	}
	if c.DrainTimeout <= 0 {
		return bad("drain_timeout", "must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return bad("log_format", `must be "json" or "text", got %q`, c.LogFormat)
	}
	switch c.Auth {
	case "", AuthKeys:
	case AuthNone:
		if n := len(c.Table.Keys); n > 0 {
			return bad("auth", `is "none", but keys lists %d key(s) that would never be checked; remove them or use "keys"`, n)
		}
	default:
		return bad("auth", `must be "keys" or "none", got %q`, c.Auth)
	}
	if err := c.Gossip.validate(); err != nil {
		return err
	}
	if err := c.Local.Validate(); err != nil {
		return err
	}
	if err := c.Link.validate(&c.Table, c.Control.Identity()); err != nil {
		return err
	}
	if err := c.Jobs.validate(); err != nil {
		return err
	}
	if err := c.Cache.validate(); err != nil {
		return err
	}
	if err := c.Usage.validate(); err != nil {
		return err
	}
	if err := c.Control.validate(); err != nil {
		return err
	}
	if err := c.Geo.Validate(); err != nil {
		return err
	}
	if c.Routing.BreakerThreshold < 1 || c.Routing.BreakerCooldown <= 0 || c.Routing.FailoverBudget <= 0 || c.Routing.PeerTTFBFloor < 0 {
		return bad("routing", "breaker_threshold must be at least 1, breaker_cooldown and failover_budget above zero")
	}
	if !c.Local.Enabled {
		for i, p := range c.Table.Providers {
			if p.Kind == table.KindLocal {
				return bad(fmt.Sprintf("providers[%d].kind", i), "is %q, but this node runs no local engine (local.enabled is false)", table.KindLocal)
			}
		}
	}
	t := c.EffectiveTable()
	return t.Validate()
}

// Load reads the file at path over the defaults, applies the environment
// (getenv, usually os.Getenv) and validates the result. An error names
// the file and the field. An empty path loads no file.
func Load(path string, getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		if err := decode(f, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, getenv); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if err := resolveSecrets(&c, getenv); err != nil {
		return c, fmt.Errorf("config %s: %w", orEnv(path), err)
	}
	if err := resolveControlSecrets(&c.Control, getenv); err != nil {
		return c, fmt.Errorf("config %s: %w", orEnv(path), err)
	}
	resolveJoinToken(&c.Control, getenv)
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", orEnv(path), err)
	}
	return c, nil
}

func orEnv(path string) string {
	if path == "" {
		return "(defaults and environment)"
	}
	return path
}

func decode(r io.Reader, c *Config) error {
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s", strings.Join(te.Errors, "; "))
		}
		return err
	}
	return nil
}

// Environment variables that override the file.
var envVars = []struct {
	name string
	set  func(c *Config, v string) error
}{
	{"MERIDIAN_NODE_ID", func(c *Config, v string) error { c.NodeID = v; return nil }},
	{"MERIDIAN_REGION", func(c *Config, v string) error { c.Region = v; return nil }},
	{"MERIDIAN_LISTEN", func(c *Config, v string) error { c.Listen = v; return nil }},
	{"MERIDIAN_LOG_LEVEL", func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{"MERIDIAN_LOG_FORMAT", func(c *Config, v string) error { c.LogFormat = v; return nil }},
	{"MERIDIAN_AUTH", func(c *Config, v string) error { c.Auth = v; return nil }},
	{"MERIDIAN_NATS_URLS", func(c *Config, v string) error { c.Control.NATSURLs = strings.Split(v, ","); return nil }},
	{"MERIDIAN_CONTROL_API_URL", func(c *Config, v string) error { c.Control.APIURL = v; return nil }},
	{"MERIDIAN_JOIN_TOKEN", func(c *Config, v string) error { c.Control.JoinToken = table.Secret(v); return nil }},
	{"MERIDIAN_TABLE_PUBLIC_KEY", func(c *Config, v string) error { c.Control.TablePublicKey = v; return nil }},
	{"MERIDIAN_LOCAL_BINARY", func(c *Config, v string) error { c.Local.Binary = v; return nil }},
	{"MERIDIAN_LOCAL_URL", func(c *Config, v string) error { c.Local.URL = v; return nil }},
	{"MERIDIAN_LOCAL_DATA_DIR", func(c *Config, v string) error { c.Local.DataDir = v; return nil }},
	{"MERIDIAN_LOCAL_NUM_THREAD", func(c *Config, v string) (err error) {
		c.Local.NumThread, err = strconv.Atoi(v)
		return err
	}},
	{"MERIDIAN_MAX_BODY_BYTES", func(c *Config, v string) (err error) {
		c.MaxBodyBytes, err = strconv.ParseInt(v, 10, 64)
		return err
	}},
	{"MERIDIAN_BODY_READ_TIMEOUT", func(c *Config, v string) (err error) {
		c.BodyReadTimeout, err = time.ParseDuration(v)
		return err
	}},
	{"MERIDIAN_STREAM_KEEPALIVE", func(c *Config, v string) (err error) {
		c.StreamKeepAlive, err = time.ParseDuration(v)
		return err
	}},
	{"MERIDIAN_STREAM_WRITE_TIMEOUT", func(c *Config, v string) (err error) {
		c.StreamWriteTimeout, err = time.ParseDuration(v)
		return err
	}},
	{"MERIDIAN_MAX_IN_FLIGHT", func(c *Config, v string) (err error) {
		c.MaxInFlight, err = strconv.Atoi(v)
		return err
	}},
	{"MERIDIAN_MAX_CONNECTIONS", func(c *Config, v string) (err error) {
		c.MaxConnections, err = strconv.Atoi(v)
		return err
	}},
	{"MERIDIAN_DRAIN_TIMEOUT", func(c *Config, v string) (err error) {
		c.DrainTimeout, err = time.ParseDuration(v)
		return err
	}},
}

func applyEnv(c *Config, getenv func(string) string) error {
	if getenv == nil {
		return nil
	}
	for _, e := range envVars {
		if v := getenv(e.name); v != "" {
			if err := e.set(c, v); err != nil {
				return fmt.Errorf("%s=%q: %w", e.name, v, err)
			}
		}
	}
	return nil
}

func resolveSecrets(c *Config, getenv func(string) string) error {
	if name := c.Gossip.KeysEnv; name != "" {
		v := ""
		if getenv != nil {
			v = getenv(name)
		}
		if v == "" {
			return &table.FieldError{Field: "gossip.keys_env", Msg: fmt.Sprintf("environment variable %s is not set", name)}
		}
		c.Gossip.Keys = c.Gossip.Keys[:0]
		for _, k := range strings.Split(v, ",") {
			c.Gossip.Keys = append(c.Gossip.Keys, table.Secret(strings.TrimSpace(k)))
		}
	}
	for i := range c.Table.Providers {
		p := &c.Table.Providers[i]
		if p.APIKeyEnv == "" {
			continue
		}
		v := ""
		if getenv != nil {
			v = getenv(p.APIKeyEnv)
		}
		if v == "" {
			return &table.FieldError{Field: fmt.Sprintf("providers[%d].api_key_env", i),
				Msg: fmt.Sprintf("environment variable %s is not set", p.APIKeyEnv)}
		}
		p.APIKey = table.Secret(v)
	}
	return nil
}
