package config

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// Usage configures usage records (edge/usage) and the exchange of limit
// reports between edges (edge/limits). Limits are enforced on every edge;
// reports and records travel over the control plane's bus when the edge
// follows one.
type Usage struct {
	// SpoolDir is where usage records wait, on disk, until the bus
	// acknowledges them. With a control plane the default is the table
	// cache's folder plus "/usage"; a standalone edge records usage only
	// when it is set, and then keeps every record in the spool.
	SpoolDir string `yaml:"spool_dir"`
	// QueueSize bounds the records waiting to be spooled. Default 8192.
	QueueSize int `yaml:"queue_size"`
	// LimitsInterval is how often the edge publishes its use of limited
	// keys and tenants to the other edges (jittered ±50%); the worst-case
	// overshoot of a limit grows with it. Default 1s.
	LimitsInterval time.Duration `yaml:"limits_interval"`
}

// DefaultUsage returns the usage settings used where nothing is set.
func DefaultUsage() Usage {
	return Usage{QueueSize: 8192, LimitsInterval: time.Second}
}

// Records reports whether the edge writes usage records.
func (c *Config) Records() bool { return c.Control.Enabled() || c.Usage.SpoolDir != "" }

// UsageDir returns the folder usage records are spooled in.
func (c *Config) UsageDir() string {
	if c.Usage.SpoolDir != "" {
		return c.Usage.SpoolDir
	}
	return filepath.Join(filepath.Dir(c.Control.CachePath(c.NodeID)), "usage")
}

func (u *Usage) validate() error {
	switch {
	case u.QueueSize < 1:
		return &table.FieldError{Field: "usage.queue_size", Msg: fmt.Sprintf("must be at least 1, got %d", u.QueueSize)}
	case u.LimitsInterval < 10*time.Millisecond || u.LimitsInterval > time.Minute:
		return &table.FieldError{Field: "usage.limits_interval", Msg: fmt.Sprintf("must be between 10ms and 1m, got %v", u.LimitsInterval)}
	}
	return nil
}
