package router

import (
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wanterr"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero means default", func(c *Config) { *c = Config{} }, ""},
		{"negative threshold", func(c *Config) { c.BreakerThreshold = -1 }, "BreakerThreshold (-1)"},
		{"negative cooldown", func(c *Config) { c.BreakerCooldown = -time.Second }, "BreakerCooldown (-1s)"},
		{"negative prior", func(c *Config) { c.FastestPrior = -time.Second }, "FastestPrior (-1s)"},
		{"negative tokens", func(c *Config) { c.OutputTokens = -1 }, "OutputTokens (-1) must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			wanterr.Contains(t, c.Validate(), tc.want)
		})
	}
}
