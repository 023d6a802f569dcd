package gateway

import (
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wanterr"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero means default", func(c *Config) { *c = Config{} }, ""},
		{"negative threshold", func(c *Config) { c.BreakerThreshold = -1 }, "BreakerThreshold must not be negative"},
		{"negative cooldown", func(c *Config) { c.BreakerCooldown = -time.Second }, "BreakerCooldown (-1s), FailoverBudget (30s) and PeerTTFBFloor (1s) must not be negative"},
		{"negative budget", func(c *Config) { c.FailoverBudget = -time.Second }, "FailoverBudget (-1s)"},
		{"negative floor", func(c *Config) { c.PeerTTFBFloor = -time.Second }, "PeerTTFBFloor (-1s)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			wanterr.Contains(t, c.Validate(), tc.want)
		})
	}
}

// TestNewFillsDefaults: a zero Config runs with DefaultConfig's values,
// as it did before DefaultConfig existed.
func TestNewFillsDefaults(t *testing.T) {
	g := New(Config{})
	d := DefaultConfig()
	if g.cfg.BreakerThreshold != d.BreakerThreshold || g.cfg.BreakerCooldown != d.BreakerCooldown ||
		g.cfg.FailoverBudget != d.FailoverBudget || g.cfg.PeerTTFBFloor != d.PeerTTFBFloor ||
		g.cfg.Logger == nil || g.cfg.NewProvider == nil {
		t.Fatalf("New(Config{}) runs with %+v; want the defaults %+v", g.cfg, d)
	}
	if d.BreakerThreshold != 5 || d.BreakerCooldown != 10*time.Second || d.FailoverBudget != 30*time.Second || d.PeerTTFBFloor != time.Second {
		t.Fatalf("DefaultConfig changed: %+v", d)
	}
}
