package api

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/testkit/wanterr"
)

func TestConfigValidate(t *testing.T) {
	gw := gateway.New(gateway.DefaultConfig())
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero durations mean no bound", func(c *Config) { c.BodyReadTimeout, c.KeepAlive, c.StreamWriteTimeout = 0, 0, 0 }, ""},
		{"admission", func(c *Config) { c.Admission = NewAdmission(1) }, ""},
		{"no gateway", func(c *Config) { c.Gateway = nil }, "Gateway is required"},
		{"no body bound", func(c *Config) { c.MaxBodyBytes = 0 }, "MaxBodyBytes must be positive"},
		{"negative body timeout", func(c *Config) { c.BodyReadTimeout = -time.Second }, "BodyReadTimeout (-1s), KeepAlive (15s) and StreamWriteTimeout (30s) must not be negative"},
		{"negative keep-alive", func(c *Config) { c.KeepAlive = -time.Second }, "KeepAlive (-1s)"},
		{"negative write timeout", func(c *Config) { c.StreamWriteTimeout = -time.Second }, "StreamWriteTimeout (-1s)"},
		{"admission of none", func(c *Config) { c.Admission = NewAdmission(0) }, "Admission must admit at least one request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Gateway = gw
			tc.edit(&c)
			wanterr.Contains(t, c.Validate(), tc.want)
		})
	}
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Gateway") || !strings.Contains(err.Error(), "MaxBodyBytes") {
		t.Fatalf("a zero Config: %v; want both missing fields named", err)
	}
}
