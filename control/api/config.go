package api

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Config configures the management API.
type Config struct {
	// AdminTokens may read and write. Every control node must be given
	// the same tokens: a forwarded write is authenticated again by the
	// leader.
	AdminTokens []string
	// ReadTokens may only read.
	ReadTokens []string
	// AllowNoAuth serves every request without a token when no tokens
	// are configured. Only for tests and local development.
	AllowNoAuth bool
	// Secrets bounds providers' secret_refs: a write naming anything else
	// is refused (the zero value is tablewire's defaults: env vars
	// starting MERIDIAN_SECRET_, files in /etc/meridian/secrets).
	Secrets tablewire.SecretPolicy
	// Registerer receives the API's and Raft's metrics, for a node that
	// serves one registry at its own /metrics. Nil means a registry of
	// the API's own, with the Go and process collectors, served at the
	// API's /metrics.
	Registerer prometheus.Registerer
	// OpenEndpoints serves /metrics and /v1/control/self without a token
	// (for a scraper on a trusted network). Off by default: both need a
	// read token.
	OpenEndpoints bool
	// ForwardTLSOnly refuses to forward to a leader whose API address is
	// not https://, so a bearer token never crosses the network in the
	// clear; a node serving TLS sets it.
	ForwardTLSOnly bool
	// MaxBody bounds a request body, bytes.
	MaxBody int64
	// MaxSnapshot bounds an uploaded snapshot, bytes.
	MaxSnapshot int64
	// HoldTimeout is how long a write waits for a leader before failing
	// with 503.
	HoldTimeout time.Duration
	// HoldRetry is the base interval between attempts while a write is
	// held; each wait adds up to 100% jitter. A change of leader ends the
	// wait at once, so this only bounds how long a held request goes
	// without looking.
	HoldRetry time.Duration
	// DefaultWait is a blocking query's wait when ?wait is not given.
	DefaultWait time.Duration
	// MaxWait bounds ?wait.
	MaxWait time.Duration
	// Logger receives request errors.
	Logger *slog.Logger
	// KEK is the 32-byte key-encryption key the cluster CA's key is
	// sealed with (control/seal); the same on every control node. Nil
	// disables the fleet identity endpoints (join.go).
	KEK *seal.KEK
	// NodeCertTTL is how long a node certificate issued at join or
	// renewal is valid. Default 12h (DefaultNodeCertTTL).
	NodeCertTTL time.Duration
	// Client forwards requests to the leader. Nil means a client with a
	// connection pool sized for concurrent writers.
	Client *http.Client
}

// DefaultConfig returns the defaults: a 1 MiB body limit, a 256 MiB
// snapshot limit, writes held up to 5 s without a leader, blocking queries
// waiting 5 minutes by default and 10 at most.
func DefaultConfig() Config {
	return Config{
		MaxBody:     1 << 20,
		MaxSnapshot: 256 << 20,
		HoldTimeout: 5 * time.Second,
		HoldRetry:   100 * time.Millisecond,
		DefaultWait: 5 * time.Minute,
		MaxWait:     10 * time.Minute,
		Logger:      slog.Default(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.AdminTokens) == 0 && len(c.ReadTokens) == 0 && !c.AllowNoAuth {
		errs = append(errs, errors.New("no admin token configured"))
	}
	for _, t := range append(append([]string{}, c.AdminTokens...), c.ReadTokens...) {
		if len(t) < 16 {
			errs = append(errs, errors.New("tokens must be at least 16 characters"))
			break
		}
	}
	if c.MaxBody <= 0 || c.MaxSnapshot <= 0 {
		errs = append(errs, errors.New("body limits must be positive"))
	}
	if c.HoldTimeout <= 0 || c.HoldRetry <= 0 {
		errs = append(errs, errors.New("hold timeout and retry must be positive"))
	}
	if c.DefaultWait <= 0 || c.MaxWait < c.DefaultWait {
		errs = append(errs, errors.New("waits must be positive, with max wait at least the default"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}
