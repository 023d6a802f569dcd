package api

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
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
		{"negative body timeout", func(c *Config) { c.BodyReadTimeout = -time.Second }, "BodyReadTimeout must not be negative"},
		{"negative keep-alive", func(c *Config) { c.KeepAlive = -time.Second }, "KeepAlive must not be negative"},
		{"negative write timeout", func(c *Config) { c.StreamWriteTimeout = -time.Second }, "StreamWriteTimeout must not be negative"},
		{"admission of none", func(c *Config) { c.Admission = NewAdmission(0) }, "Admission must admit at least one request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Gateway = gw
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
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Gateway") || !strings.Contains(err.Error(), "MaxBodyBytes") {
		t.Fatalf("a zero Config: %v; want both missing fields named", err)
	}
}
