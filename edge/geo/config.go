package geo

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Default location headers, tried in this order.
const (
	// HeaderClientLocation is Meridian's own header: "lat,lon" or a
	// country code, set by a trusted load balancer or CDN.
	HeaderClientLocation = "X-Meridian-Client-Location"
	// HeaderCFIPCountry is Cloudflare's country header. Cloudflare's "XX"
	// (unknown) and "T1" (Tor) are not in the country table, so they are
	// ignored.
	HeaderCFIPCountry = "CF-IPCountry"
)

// Config configures a Locator.
type Config struct {
	// Headers are the request headers that carry a trusted location, tried in order.
	// Each value is "lat,lon" (decimal degrees) or an ISO 3166-1 alpha-2 country code.
	// Default ["X-Meridian-Client-Location", "CF-IPCountry"].
	Headers []string `yaml:"headers"`
	// TrustedProxies are CIDRs whose requests' location headers are believed, e.g. "10.0.0.0/8".
	// A header from any other peer is ignored. Empty means no header is ever trusted.
	// A bare address ("10.1.2.3", "fd00::1") means that one host.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ForwardedFor, when true, takes the client IP for GeoIP from the rightmost
	// X-Forwarded-For entry not in TrustedProxies, when the direct peer is trusted.
	ForwardedFor bool `yaml:"forwarded_for"`
	// GeoIPDatabase is the path of a MaxMind-format .mmdb (GeoLite2-City or -Country shape); empty disables GeoIP.
	GeoIPDatabase string `yaml:"geoip_database"`
}

// DefaultConfig returns a Config that reads the default headers but trusts
// no proxy and has no GeoIP database, so every client is placed at the
// edge's own region until the operator says otherwise.
func DefaultConfig() Config {
	return Config{
		Headers: []string{HeaderClientLocation, HeaderCFIPCountry},
	}
}

// Validate reports the first problem in c, naming the field, e.g.
// "geo.trusted_proxies[1]: ...". It opens the GeoIP database, when one is
// configured, to check that it is a readable MaxMind database.
func (c Config) Validate() error {
	for i, h := range c.Headers {
		if !validHeaderName(h) {
			return fmt.Errorf("geo.headers[%d]: %q is not a valid HTTP header name", i, h)
		}
	}
	for i, s := range c.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			return fmt.Errorf("geo.trusted_proxies[%d]: %w", i, err)
		}
	}
	if c.GeoIPDatabase != "" {
		db, err := maxminddb.Open(c.GeoIPDatabase)
		if err != nil {
			return fmt.Errorf("geo.geoip_database: %w", err)
		}
		if err := db.Close(); err != nil {
			return fmt.Errorf("geo.geoip_database: %w", err)
		}
	}
	return nil
}

// parsePrefix parses a CIDR or a bare address (a single-host prefix),
// masked and with IPv4-mapped IPv6 unmapped, so it matches the unmapped
// peer addresses Locate compares against it.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least /96", s)
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("a trusted proxy cannot have an IPv6 zone")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validHeaderName reports whether s is a non-empty RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' ||
			c == '*' || c == '+' || c == '-' || c == '.' || c == '^' || c == '_' ||
			c == '`' || c == '|' || c == '~':
		default:
			return false
		}
	}
	return true
}
