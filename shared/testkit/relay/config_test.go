package relay

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
		{"default with a target", func(*Config) {}, ""},
		{"no target", func(c *Config) { c.Target = "" }, "Target is required"},
		{"nothing to listen on", func(c *Config) { c.UDPListen = "" }, "give UDPListen, TCPListen or both"},
		{"negative delay", func(c *Config) { c.Delay = -time.Millisecond }, "must not be negative"},
		{"loss above one", func(c *Config) { c.Loss = 1.5 }, "Loss must be in [0, 1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Target = "127.0.0.1:1"
			tc.edit(&c)
			wanterr.Contains(t, c.Validate(), tc.want)
		})
	}
}
