package config

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// Cache configures the edge's answer cache (edge/cache). It is off until
// max_bytes is set: an operator decides how much memory answers may
// take. Which requests are cached, and for how long, the routes' and
// tenants' cache policies say.
type Cache struct {
	// MaxBytes caps the memory cached answers take, bytes; 0 (the
	// default) turns the cache off.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxEntryBytes is the largest answer kept, bytes; 0 means
	// MaxBytes/16.
	MaxEntryBytes int64 `yaml:"max_entry_bytes"`
	// DefaultTTL is how long an answer is served when no policy sets a
	// TTL. Default 5m.
	DefaultTTL time.Duration `yaml:"default_ttl"`
}

// DefaultCache returns the cache settings used where nothing is set: off,
// with a 5-minute TTL once enabled.
func DefaultCache() Cache { return Cache{DefaultTTL: 5 * time.Minute} }

// Enabled reports whether the edge keeps a cache.
func (c *Cache) Enabled() bool { return c.MaxBytes > 0 }

func (c *Cache) validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: "cache." + field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.MaxBytes < 0:
		return bad("max_bytes", "must not be negative (0 turns the cache off), got %d", c.MaxBytes)
	case c.MaxEntryBytes < 0 || (c.MaxBytes > 0 && c.MaxEntryBytes > c.MaxBytes):
		return bad("max_entry_bytes", "must be between 0 and max_bytes, got %d", c.MaxEntryBytes)
	case c.DefaultTTL <= 0:
		return bad("default_ttl", "must be positive, got %v", c.DefaultTTL)
	}
	return nil
}
