package tablesync

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Config configures an edge's table client.
type Config struct {
	// NodeID and Region identify the edge in its reports.
	NodeID string
	Region string
	// URLs are NATS servers to start from, "nats://host:port" (or
	// "tls://"); the client also learns the rest of the cluster from
	// them. They must not carry credentials: use User, Password, Token.
	URLs []string
	// User and Password, or Token, authenticate the connection.
	User     string
	Password string
	Token    string
	// NKey and Sign, when set, authenticate with the edge's own NATS
	// identity instead (its user public nkey, and a signer of the
	// server's nonce with its seed): the edge then reports on its own
	// subject and reads replies only in its own inbox, as the server's
	// permissions for it require.
	NKey string
	Sign func(nonce []byte) ([]byte, error)
	// TLS, when set, makes the connection use TLS with this config
	// (its RootCAs name the control plane's CA).
	TLS *tls.Config
	// TableKeys are the control plane's table public keys (ed25519):
	// the edge applies only tables, deltas, heartbeats and snapshot
	// replies signed by one of them. Required. More than one during a
	// key rotation.
	TableKeys []ed25519.PublicKey
	// ClusterID, when set, is the only control-plane cluster whose tables
	// the edge accepts; empty accepts the cluster of the first table it
	// applies, then only that one.
	ClusterID string
	// CachePath is where the last good table is kept, so the edge can
	// start while no control node answers. Empty keeps none.
	CachePath string
	// MaxBytes caps an update or snapshot, bytes. Default 4 MiB.
	MaxBytes int
	// SnapshotTimeout bounds one snapshot request. Default 2 s.
	SnapshotTimeout time.Duration
	// RetryMin and RetryMax bound the wait between failed snapshot
	// requests; it doubles from min to max, with up to 50% jitter.
	// Defaults 250 ms and 10 s.
	RetryMin time.Duration
	RetryMax time.Duration
	// ReconnectWait is the pause before redialling a server; NATS adds
	// up to ReconnectJitter (2× that for TLS). Defaults 1 s and 1 s.
	ReconnectWait   time.Duration
	ReconnectJitter time.Duration
	// PingInterval is how often the client pings its server; two
	// unanswered pings mean the server is gone. Default 10 s.
	PingInterval time.Duration
	// HeartbeatInterval is the leader's heartbeat period to assume until
	// a heartbeat says otherwise. Default 1 s.
	HeartbeatInterval time.Duration
	// StaleAfter is how many heartbeat intervals may pass without news
	// from the control plane, or behind its revision, before the edge
	// calls its table stale. Default 3.
	StaleAfter int
	// ReportInterval is the period of the edge's applied reports, with
	// up to 20% jitter; it also reports after every apply or rejection.
	// Default 10 s.
	ReportInterval time.Duration
	// Resolver reads providers' secret_refs on this edge.
	Resolver tablewire.Resolver
	// Apply validates a table and installs it in the gateway
	// (gateway.SetTable, which runs shared/table's validation). It must
	// keep the old table when it returns an error.
	Apply func(*table.Table) error
	// Patch, when set, installs a table that differs from the last one
	// handed to Apply or Patch only as the change says
	// (gateway.PatchTable): the client calls it for deltas that touch
	// only routes, keys and tenants' budget state, so an edge's work is
	// proportional to the change. Like Apply, it keeps the old table
	// when it returns an error. Nil sends every table through Apply.
	Patch func(*table.Table, table.Change) error
	// ReadyModels, when set, returns the IDs (Model.ID, not the engine's
	// own name) of the models this edge's local engine has loaded and
	// serves. It is called on the client's goroutine for every applied
	// report, so it must be cheap and must not block; the client copies
	// and sorts the result. Nil reports none. When the set changes, call
	// Syncer.ReportReady so the control plane hears at once.
	ReadyModels func() []string
	// Logger receives the client's logs; they never carry credentials.
	Logger *slog.Logger
	// Registerer receives the client's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults; NodeID, URLs, credentials and
// Apply must still be set.
func DefaultConfig() Config {
	return Config{
		MaxBytes:          tablewire.DefaultMaxBytes,
		SnapshotTimeout:   2 * time.Second,
		RetryMin:          250 * time.Millisecond,
		RetryMax:          10 * time.Second,
		ReconnectWait:     time.Second,
		ReconnectJitter:   time.Second,
		PingInterval:      10 * time.Second,
		HeartbeatInterval: time.Second,
		StaleAfter:        3,
		ReportInterval:    10 * time.Second,
		Logger:            slog.Default(),
		Now:               time.Now,
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("tablesync: node ID is required"))
	}
	if len(c.URLs) == 0 {
		errs = append(errs, errors.New("tablesync: at least one NATS URL is required"))
	}
	if (c.User == "" || c.Password == "") && c.Token == "" && (c.NKey == "" || c.Sign == nil) {
		errs = append(errs, errors.New("tablesync: NATS credentials are required: a user and password, or a token"))
	}
	if len(c.TableKeys) == 0 {
		errs = append(errs, errors.New("tablesync: a table public key is required (control.table_public_keys; `meridianctl table-key` prints it)"))
	}
	for _, k := range c.TableKeys {
		if len(k) != ed25519.PublicKeySize {
			errs = append(errs, errors.New("tablesync: a table public key is 32 bytes"))
		}
	}
	if c.Apply == nil {
		errs = append(errs, errors.New("tablesync: Apply is required"))
	}
	if c.MaxBytes < 1024 || c.SnapshotTimeout <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin ||
		c.ReconnectWait <= 0 || c.ReconnectJitter < 0 || c.PingInterval <= 0 || c.HeartbeatInterval <= 0 ||
		c.StaleAfter < 1 || c.ReportInterval <= 0 {
		errs = append(errs, errors.New("tablesync: sizes, timeouts and intervals must be positive"))
	}
	if c.Logger == nil || c.Now == nil {
		errs = append(errs, errors.New("tablesync: logger and clock are required"))
	}
	return errors.Join(errs...)
}
