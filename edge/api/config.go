package api

import (
	"errors"
	"fmt"
	"time"
)

// DefaultConfig returns the bounds an edge serves with (edge/config's
// defaults): 4 MiB bodies read within 30s, a keep-alive after 15s of
// stream silence and 30s for each stream write. Gateway must still be
// set; Metrics, Logger and Admission stay nil (none, slog.Default, no
// bound). Zero fields keep the meaning Config gives them.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       4 << 20,
		BodyReadTimeout:    30 * time.Second,
		KeepAlive:          15 * time.Second,
		StreamWriteTimeout: 30 * time.Second,
	}
}

// Validate reports what no surface can serve with: no gateway, a body
// bound that refuses every body, or a negative duration.
func (c *Config) Validate() error {
	var errs []error
	if c.Gateway == nil {
		errs = append(errs, errors.New("api: Gateway is required"))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("api: MaxBodyBytes must be positive, got %d", c.MaxBodyBytes))
	}
	if c.BodyReadTimeout < 0 || c.KeepAlive < 0 || c.StreamWriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("api: BodyReadTimeout (%v), KeepAlive (%v) and StreamWriteTimeout (%v) must not be negative",
			c.BodyReadTimeout, c.KeepAlive, c.StreamWriteTimeout))
	}
	if c.Admission != nil && c.Admission.max < 1 {
		errs = append(errs, fmt.Errorf("api: Admission must admit at least one request, got %d", c.Admission.max))
	}
	return errors.Join(errs...)
}
