package gateway

import (
	"strings"
	"testing"
	"time"
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
		{"negative cooldown", func(c *Config) { c.BreakerCooldown = -time.Second }, "BreakerCooldown must not be negative"},
		{"negative budget", func(c *Config) { c.FailoverBudget = -time.Second }, "FailoverBudget must not be negative"},
		{"negative floor", func(c *Config) { c.PeerTTFBFloor = -time.Second }, "PeerTTFBFloor must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v; want an error containing %q", err, tc.want)
			}
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
