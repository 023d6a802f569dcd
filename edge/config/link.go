package config

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// Link configures the node's QUIC links to other edges (edge/link): the
// node forwards requests to peers named by providers of kind "peer" in
// the table, and serves requests peers forward to it. Off unless enabled.
type Link struct {
	// Enabled turns links on.
	Enabled bool `yaml:"enabled"`
	// Listen is the UDP host:port links listen and dial from. Default
	// "0.0.0.0:7443"; port 0 picks a free one.
	Listen string `yaml:"listen"`
	// CAFile is the cluster CA certificate (PEM). Only node certificates
	// it signed are accepted, in both directions.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are this node's certificate and key (PEM),
	// signed by the cluster CA for node_id (meridianctl tls cert).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MaxHops is how many links a request may cross. Default 2.
	MaxHops int `yaml:"max_hops"`
	// KeepAlive is how often an idle link is kept warm. Default 1s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// IdleTimeout is QUIC's own idle timeout, the backstop for peers
	// that do not answer pings. Default 5s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// PingInterval is how often a link pings its peer; a link silent for
	// max(PingMisses × PingInterval, 3 × RTT + PingInterval) is declared
	// dead and its peer skipped until a redial and a probe succeed.
	// Defaults 200ms and 4.
	PingInterval time.Duration `yaml:"ping_interval"`
	PingMisses   int           `yaml:"ping_misses"`
	// ReplayWindow bounds how old a forwarded request may be, by the
	// sender's clock, and how long its ID is remembered against 0-RTT
	// replays. Default 30s.
	ReplayWindow time.Duration `yaml:"replay_window"`
}

// DefaultLink returns the link settings used where nothing is set.
func DefaultLink() Link {
	return Link{Listen: "0.0.0.0:7443", MaxHops: 2, KeepAlive: time.Second, IdleTimeout: 5 * time.Second, PingInterval: 200 * time.Millisecond, PingMisses: 4, ReplayWindow: 30 * time.Second}
}

// validate checks the settings; with a fleet identity (control.api_url)
// the certificate and CA come from joining, so the files are optional.
func (l *Link) validate(t *table.Table, identity bool) error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if !l.Enabled {
		for i, p := range t.Providers {
			if p.Kind == table.KindPeer {
				return bad(fmt.Sprintf("providers[%d].kind", i), "is %q, but links are off (link.enabled is false)", table.KindPeer)
			}
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(l.Listen); err != nil {
		return bad("link.listen", "must be host:port: %v", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return bad("link.listen", "port %q is not a number from 0 to 65535", port)
	}
	for _, f := range []struct{ field, v string }{{"link.ca_file", l.CAFile}, {"link.cert_file", l.CertFile}, {"link.key_file", l.KeyFile}} {
		if f.v == "" && !identity {
			return bad(f.field, "is required: links are mutual TLS with certificates from the cluster CA (or set control.api_url to join the fleet for one)")
		}
	}
	if l.MaxHops < 1 {
		return bad("link.max_hops", "must be at least 1")
	}
	if l.KeepAlive <= 0 || l.IdleTimeout <= l.KeepAlive {
		return bad("link.idle_timeout", "must be longer than link.keepalive, which must be positive")
	}
	if l.PingInterval <= 0 || l.PingMisses < 2 {
		return bad("link.ping_interval", "must be positive, with link.ping_misses at least 2")
	}
	if l.ReplayWindow <= 0 {
		return bad("link.replay_window", "must be positive")
	}
	return nil
}
