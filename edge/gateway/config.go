package gateway

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/meridian-mesh/meridian/edge/provider"
)

// DefaultConfig returns the timings and limits described on Config, with
// slog.Default as the logger and provider.New building adapters. New
// fills any zero field of its config from here, so a literal Config that
// sets only what it needs keeps working.
func DefaultConfig() Config {
	return Config{
		Logger:           slog.Default(),
		NewProvider:      provider.New,
		BreakerThreshold: 5,
		BreakerCooldown:  10 * time.Second,
		FailoverBudget:   30 * time.Second,
		PeerTTFBFloor:    time.Second,
	}
}

// Validate reports the fields no gateway can run with: negative counts
// and durations. Zero fields are valid and mean their default.
func (c *Config) Validate() error {
	switch {
	case c.BreakerThreshold < 0:
		return fmt.Errorf("gateway: BreakerThreshold must not be negative, got %d", c.BreakerThreshold)
	case c.BreakerCooldown < 0 || c.FailoverBudget < 0 || c.PeerTTFBFloor < 0:
		return fmt.Errorf("gateway: BreakerCooldown (%v), FailoverBudget (%v) and PeerTTFBFloor (%v) must not be negative",
			c.BreakerCooldown, c.FailoverBudget, c.PeerTTFBFloor)
	}
	return nil
}

// fill sets every zero field to its default.
func (c *Config) fill() {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.NewProvider == nil {
		c.NewProvider = d.NewProvider
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = d.BreakerThreshold
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = d.BreakerCooldown
	}
	if c.FailoverBudget == 0 {
		c.FailoverBudget = d.FailoverBudget
	}
	if c.PeerTTFBFloor == 0 {
		c.PeerTTFBFloor = d.PeerTTFBFloor
	}
}
