package publish

import (
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/compile"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/seal"
)

// Source is the replicated state: a control node's FSM.
type Source interface {
	State() *fsm.State
	Watch() <-chan struct{}
}

// Config configures a control node's publisher.
type Config struct {
	// Conn is the node's NATS connection (to its embedded server, or to
	// the cluster --nats-url names).
	Conn *nats.Conn
	// Source is the node's FSM.
	Source Source
	// IsLeader reports whether this node leads; only the leader
	// publishes updates and heartbeats.
	IsLeader func() bool
	// NodeID is this node's Raft ID, named in heartbeats.
	NodeID string
	// KEK opens the table-signing key sealed in the replicated state
	// (control/seal); nil opens only a key stored in the clear
	// (development). Every control node needs it: followers sign the
	// snapshots they serve.
	KEK *seal.KEK
	// Compile bounds the tables the node compiles.
	Compile compile.Config
	// HeartbeatInterval is the leader's pulse, with up to 10% jitter;
	// it is also how often leadership is checked. Default 1 s.
	HeartbeatInterval time.Duration
	// FullMaxBytes: a table encoding to at most this many bytes is
	// published whole instead of as a delta. Default 16 KiB.
	FullMaxBytes int
	// SilentAfter is how many of an edge's report intervals may pass
	// without a report before status shows it as silent. Default 3.
	SilentAfter int
	// MaxEdges bounds how many edges' reports are kept. Default 100000.
	MaxEdges int
	// ForgetAfter is how long a silent edge stays in the status before
	// it is forgotten (an edge that was removed). Default 24 h.
	ForgetAfter time.Duration
	// Logger receives the publisher's logs. It never sees a secret_ref.
	Logger *slog.Logger
	// Registerer receives the publisher's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults; Conn, Source, IsLeader and NodeID
// must still be set.
func DefaultConfig() Config {
	return Config{
		Compile:           compile.DefaultConfig(),
		HeartbeatInterval: time.Second,
		FullMaxBytes:      16 << 10,
		SilentAfter:       3,
		MaxEdges:          100000,
		ForgetAfter:       24 * time.Hour,
		Logger:            slog.Default(),
		Now:               time.Now,
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Conn == nil || c.Source == nil || c.IsLeader == nil {
		errs = append(errs, errors.New("publish: conn, source and leadership are required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("publish: node ID is required"))
	}
	if err := c.Compile.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HeartbeatInterval <= 0 || c.FullMaxBytes < 0 || c.SilentAfter < 1 || c.MaxEdges < 1 || c.ForgetAfter <= 0 {
		errs = append(errs, errors.New("publish: heartbeat interval, silent-after and max edges must be positive"))
	}
	if c.Logger == nil || c.Now == nil {
		errs = append(errs, errors.New("publish: logger and clock are required"))
	}
	return errors.Join(errs...)
}
