package geo

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Source says where a location came from: "header", "geoip", "edge".
type Source string

// The sources, from most to least trusted.
const (
	// SourceHeader: a location header set by a trusted proxy.
	SourceHeader Source = "header"
	// SourceGeoIP: a GeoIP lookup of the client's address.
	SourceGeoIP Source = "geoip"
	// SourceEdge: nothing better was known; the edge's own region.
	SourceEdge Source = "edge"
)

// Location is a client's place and how it was found.
type Location struct {
	Point   Point  // where, in degrees
	Country string // ISO code when known, upper case
	Source  Source // how Point was found
}

// ErrInvalidFallback is returned by New when the fallback point is not Valid.
var ErrInvalidFallback = errors.New("geo: fallback point is not a valid latitude/longitude")

// Locator finds clients. Safe for concurrent use.
//
// Everything but the GeoIP reader is immutable after New. The reader is
// guarded by mu only so that Close cannot unmap the database under a
// lookup in flight; lookups take the read lock.
type Locator struct {
	headers      []string       // canonical MIME header keys, in order
	trusted      []netip.Prefix // masked, IPv4 unmapped
	forwardedFor bool
	fallback     Location
	// geoip is whether a database was opened, so a Locator without one
	// never touches mu on the hot path.
	geoip bool

	mu sync.RWMutex
	db *maxminddb.Reader // nil when GeoIP is disabled or after Close
}

// New builds a Locator. fallback is the edge's own region, returned with
// SourceEdge when nothing better is known. It opens the GeoIP database
// when one is configured.
func New(cfg Config, fallback Point) (*Locator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !fallback.Valid() {
		return nil, ErrInvalidFallback
	}
	l := &Locator{
		forwardedFor: cfg.ForwardedFor,
		fallback:     Location{Point: fallback, Source: SourceEdge},
	}
	for _, h := range cfg.Headers {
		l.headers = append(l.headers, textproto.CanonicalMIMEHeaderKey(h))
	}
	for _, s := range cfg.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil { // Validate has already checked; kept for safety.
			return nil, err
		}
		l.trusted = append(l.trusted, p)
	}
	if cfg.GeoIPDatabase != "" {
		db, err := maxminddb.Open(cfg.GeoIPDatabase)
		if err != nil {
			return nil, fmt.Errorf("geo.geoip_database: %w", err)
		}
		l.db, l.geoip = db, true
	}
	return l, nil
}

// Close releases the GeoIP database. Locate keeps working afterwards,
// without GeoIP.
func (l *Locator) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.db == nil {
		return nil
	}
	err := l.db.Close()
	l.db = nil
	return err
}

// Locate returns the client's location:
//  1. a trusted header, only when the direct peer (remoteAddr, "ip:port" as
//     in http.Request.RemoteAddr) is inside TrustedProxies;
//  2. a GeoIP lookup of the client IP when a database is configured (the
//     city location if present, else the country centre via Country);
//  3. the fallback, with SourceEdge.
//
// The client IP is the peer, or with ForwardedFor and a trusted peer, the
// rightmost X-Forwarded-For entry not in TrustedProxies.
func (l *Locator) Locate(h http.Header, remoteAddr string) Location {
	peer := parseHostPort(remoteAddr)
	trusted := l.isTrusted(peer)
	if trusted {
		for _, name := range l.headers {
			vs := h[name]
			if len(vs) == 0 {
				continue
			}
			// A proxy that appends instead of replacing leaves the
			// client's own value first; the last one is the proxy's.
			if loc, ok := Parse(vs[len(vs)-1]); ok {
				return loc
			}
		}
	}
	client := peer
	if trusted && l.forwardedFor {
		client = l.forwardedClient(h, peer)
	}
	if loc, ok := l.lookup(client); ok {
		return loc
	}
	return l.fallback
}

// isTrusted reports whether a is inside one of the trusted prefixes.
func (l *Locator) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedClient walks X-Forwarded-For from the right, over all header
// lines, skipping trusted proxies, and returns the first other address.
// Entries left of it were written by the client and are not believed. An
// unparseable entry stops the walk: nothing beyond it can be trusted, so
// the peer is used. When every entry is trusted, the peer is used too.
func (l *Locator) forwardedClient(h http.Header, peer netip.Addr) netip.Addr {
	lines := h["X-Forwarded-For"]
	for i := len(lines) - 1; i >= 0; i-- {
		s := lines[i]
		for len(s) > 0 {
			var entry string
			if j := strings.LastIndexByte(s, ','); j >= 0 {
				entry, s = s[j+1:], s[:j]
			} else {
				entry, s = s, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a := parseHostPort(entry)
			if !a.IsValid() {
				return peer
			}
			if !l.isTrusted(a) {
				return a
			}
		}
	}
	return peer
}

// parseHostPort parses "ip:port", "[v6]:port" or a bare address, with
// IPv4-mapped IPv6 unmapped and any zone dropped. It returns the zero Addr
// for anything else (a Unix socket peer, garbage).
//
// The form is chosen by shape, not by trying one parser then the other,
// because a failed parse allocates its error.
func parseHostPort(s string) netip.Addr {
	var a netip.Addr
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}
		}
		a = ap.Addr()
	} else {
		var err error
		if a, err = netip.ParseAddr(s); err != nil {
			return netip.Addr{}
		}
	}
	return a.Unmap().WithZone("")
}

// geoRecord is the part of a GeoLite2-City or -Country record that Locate
// reads. Latitude and longitude are pointers because a country-only record
// lacks them, and 0,0 is a real (if wet) place.
type geoRecord struct {
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
}

// lookup finds a in the GeoIP database. A record counts only when it
// yields a valid point: its own location, else its country's centre (the
// registered country when the country is missing, as for some anycast and
// satellite ranges).
func (l *Locator) lookup(a netip.Addr) (Location, bool) {
	if !l.geoip || !a.IsValid() {
		return Location{}, false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.db == nil {
		return Location{}, false
	}
	res := l.db.Lookup(a)
	if !res.Found() {
		return Location{}, false
	}
	var rec geoRecord
	if err := res.Decode(&rec); err != nil {
		return Location{}, false
	}
	code := rec.Country.ISOCode
	if code == "" {
		code = rec.RegisteredCountry.ISOCode
	}
	c, known := lookupCountry(code)
	if lat, lon := rec.Location.Latitude, rec.Location.Longitude; lat != nil && lon != nil {
		if p := (Point{*lat, *lon}); p.Valid() {
			loc := Location{Point: p, Source: SourceGeoIP}
			if known {
				loc.Country = c.code
			} else if validCode(code) {
				loc.Country = strings.ToUpper(code)
			}
			return loc, true
		}
	}
	if known {
		return Location{Point: c.point, Country: c.code, Source: SourceGeoIP}, true
	}
	return Location{}, false
}

// validCode reports whether s looks like an alpha-2 code (two ASCII letters).
func validCode(s string) bool {
	if len(s) != 2 {
		return false
	}
	for i := 0; i < 2; i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// maxCoordLen bounds one coordinate in a "lat,lon" value, in bytes. More
// digits than this carry no information (a float64 has ~17) and only cost
// parsing time.
const maxCoordLen = 24

// Parse parses one header value: "lat,lon" or a country code. Exported for
// the dry-run endpoint (?lat=&lon= or ?country=). Spaces around the value
// and around each coordinate are ignored. Coordinates are plain decimal
// degrees (an optional sign, digits, an optional fraction): no exponents,
// no NaN or Inf, no hex. A country code must be in the country table; it
// is case-insensitive and returned upper case. The result has SourceHeader.
func Parse(v string) (Location, bool) {
	v = strings.TrimSpace(v)
	latS, lonS, isPair := strings.Cut(v, ",")
	if !isPair {
		c, ok := lookupCountry(v)
		if !ok {
			return Location{}, false
		}
		return Location{Point: c.point, Country: c.code, Source: SourceHeader}, true
	}
	lat, ok := parseDegrees(latS)
	if !ok {
		return Location{}, false
	}
	lon, ok := parseDegrees(lonS) // a second comma makes this fail
	if !ok {
		return Location{}, false
	}
	p := Point{lat, lon}
	if !p.Valid() {
		return Location{}, false
	}
	return Location{Point: p, Source: SourceHeader}, true
}

// parseDegrees parses one decimal coordinate, strictly, without allocating:
// the syntax is checked first so strconv never builds an error.
func parseDegrees(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxCoordLen {
		return 0, false
	}
	i := 0
	if s[0] == '+' || s[0] == '-' {
		i++
	}
	digits, dot := 0, false
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}
