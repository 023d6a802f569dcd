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
	// SemanticModel is the model (a table model ID, routed like any
	// other, ideally placed on this edge's engine) whose embeddings the
	// semantic cache compares; empty turns the semantic cache off. The
	// routes' and tenants' cache similarity then says which requests use
	// it.
	SemanticModel string `yaml:"semantic_model"`
	// SemanticMaxVectors bounds the semantic index (exact search): the
	// oldest vectors go first. 0 means 65536.
	SemanticMaxVectors int `yaml:"semantic_max_vectors"`
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
	case c.SemanticMaxVectors < 0:
		return bad("semantic_max_vectors", "must not be negative, got %d", c.SemanticMaxVectors)
	case c.SemanticModel != "" && c.MaxBytes == 0:
		return bad("semantic_model", "needs the cache on (max_bytes): the semantic cache serves the answers it stores")
	}
	return nil
}
