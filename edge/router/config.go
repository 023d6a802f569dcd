package router

import "fmt"

// Validate reports negative counts and durations. Zero fields are valid
// and take their defaults (DefaultConfig).
func (c *Config) Validate() error {
	if c.BreakerThreshold < 0 || c.BreakerCooldown < 0 || c.FastestPrior < 0 || c.OutputTokens < 0 {
		return fmt.Errorf("router: BreakerThreshold (%d), BreakerCooldown (%v), FastestPrior (%v) and OutputTokens (%d) must not be negative",
			c.BreakerThreshold, c.BreakerCooldown, c.FastestPrior, c.OutputTokens)
	}
	return nil
}
