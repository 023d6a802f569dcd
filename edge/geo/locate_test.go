package geo

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Networks in the test database. Documentation ranges, so no real
// address is ever placed by a test.
const (
	cityNet4    = "203.0.113.0/24"  // city record, London
	countryNet4 = "198.51.100.0/24" // country-only record, DE
	cityNet6    = "2001:db8:1::/48" // city record, Tokyo
	regNet4     = "192.0.2.0/25"    // registered_country only, FR
	oddNet4     = "192.0.2.128/25"  // location without any country
)

var (
	tokyo   = Point{35.6895, 139.6917}
	london  = Point{51.5142, -0.0931}
	nowhere = Point{-10.5, 20.25}
	edge    = Point{50.1109, 8.6821} // Frankfurt, the edge's own region
)

// writeDB builds a small GeoLite2-City-shaped database in t.TempDir.
func writeDB(t testing.TB) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoLite2-City",
		RecordSize:              28,
		IncludeReservedNetworks: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	loc := func(p Point) mmdbtype.Map {
		return mmdbtype.Map{
			"latitude":        mmdbtype.Float64(p.Lat),
			"longitude":       mmdbtype.Float64(p.Lon),
			"accuracy_radius": mmdbtype.Uint16(50),
		}
	}
	iso := func(code string) mmdbtype.Map {
		return mmdbtype.Map{"iso_code": mmdbtype.String(code), "geoname_id": mmdbtype.Uint32(1)}
	}
	records := map[string]mmdbtype.Map{
		cityNet4:    {"location": loc(london), "country": iso("GB"), "city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String("London")}}},
		countryNet4: {"country": iso("DE"), "registered_country": iso("DE")},
		cityNet6:    {"location": loc(tokyo), "country": iso("JP")},
		regNet4:     {"registered_country": iso("FR")},
		oddNet4:     {"location": loc(nowhere)},
	}
	for cidr, rec := range records {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, rec); err != nil {
			t.Fatalf("insert %s: %v", cidr, err)
		}
	}
	path := filepath.Join(t.TempDir(), "city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func newLocator(t testing.TB, cfg Config) *Locator {
	t.Helper()
	l, err := New(cfg, edge)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestLocate(t *testing.T) {
	db := writeDB(t)
	gb, _ := Country("GB")
	de, _ := Country("DE")
	fr, _ := Country("FR")
	us, _ := Country("US")
	edgeLoc := Location{Point: edge, Source: SourceEdge}

	base := DefaultConfig()
	base.TrustedProxies = []string{"10.0.0.0/8", "fd00::/8", "192.168.1.7"}
	withDB := base
	withDB.GeoIPDatabase = db
	xff := withDB
	xff.ForwardedFor = true

	cases := []struct {
		name   string
		cfg    Config
		h      http.Header
		remote string
		want   Location
	}{
		// Headers: only from trusted peers.
		{"trusted peer, lat,lon header", base,
			hdr(HeaderClientLocation, "48.1,11.6"), "10.1.2.3:4567",
			Location{Point: Point{48.1, 11.6}, Source: SourceHeader}},
		{"trusted peer, country header", base,
			hdr("Cf-Ipcountry", "gb"), "10.1.2.3:4567",
			Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"trusted single host", base,
			hdr(HeaderCFIPCountry, "GB"), "192.168.1.7:1",
			Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"untrusted peer, header ignored", base,
			hdr(HeaderClientLocation, "48.1,11.6", HeaderCFIPCountry, "GB"), "203.0.113.9:4567",
			edgeLoc},
		{"untrusted neighbour of single host", base,
			hdr(HeaderCFIPCountry, "GB"), "192.168.1.8:1",
			edgeLoc},
		{"no trusted proxies, header never trusted", DefaultConfig(),
			hdr(HeaderCFIPCountry, "GB"), "10.1.2.3:4567",
			edgeLoc},
		{"header order: first configured wins", base,
			hdr(HeaderCFIPCountry, "GB", HeaderClientLocation, "48.1,11.6"), "10.1.2.3:4567",
			Location{Point: Point{48.1, 11.6}, Source: SourceHeader}},
		{"header order reversed in config", Config{Headers: []string{HeaderCFIPCountry, HeaderClientLocation}, TrustedProxies: base.TrustedProxies},
			hdr(HeaderClientLocation, "48.1,11.6", HeaderCFIPCountry, "GB"), "10.1.2.3:4567",
			Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"bad first header falls through to second", base,
			hdr(HeaderClientLocation, "91,0", HeaderCFIPCountry, "GB"), "10.1.2.3:4567",
			Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"Cloudflare XX is ignored", base,
			hdr(HeaderCFIPCountry, "XX"), "10.1.2.3:4567",
			edgeLoc},
		{"repeated header: the proxy's last value wins", base,
			hdr(HeaderCFIPCountry, "US", HeaderCFIPCountry, "GB"), "10.1.2.3:4567",
			Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"trusted IPv6 peer", base,
			hdr(HeaderCFIPCountry, "US"), "[fd00::1]:443",
			Location{Point: us, Country: "US", Source: SourceHeader}},
		{"trusted IPv6 peer with zone", base,
			hdr(HeaderCFIPCountry, "US"), "[fd00::1%eth0]:443",
			Location{Point: us, Country: "US", Source: SourceHeader}},
		{"IPv4-mapped IPv6 peer matches IPv4 prefix", base,
			hdr(HeaderCFIPCountry, "US"), "[::ffff:10.0.0.1]:443",
			Location{Point: us, Country: "US", Source: SourceHeader}},
		{"untrusted IPv6 peer", base,
			hdr(HeaderCFIPCountry, "US"), "[2001:db8:1::1]:443",
			edgeLoc},
		{"unparseable remote addr", base,
			hdr(HeaderCFIPCountry, "US"), "@",
			edgeLoc},
		{"empty remote addr", withDB,
			hdr(HeaderCFIPCountry, "US"), "",
			edgeLoc},

		// GeoIP of the direct peer.
		{"geoip city record", withDB,
			nil, "203.0.113.9:4567",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"geoip country-only record", withDB,
			nil, "198.51.100.20:4567",
			Location{Point: de, Country: "DE", Source: SourceGeoIP}},
		{"geoip registered country only", withDB,
			nil, "192.0.2.1:1",
			Location{Point: fr, Country: "FR", Source: SourceGeoIP}},
		{"geoip location without country", withDB,
			nil, "192.0.2.200:1",
			Location{Point: nowhere, Source: SourceGeoIP}},
		{"geoip IPv6 city record", withDB,
			nil, "[2001:db8:1:2::3]:443",
			Location{Point: tokyo, Country: "JP", Source: SourceGeoIP}},
		{"geoip IPv4-mapped peer", withDB,
			nil, "[::ffff:203.0.113.9]:443",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"geoip bare address without port", withDB,
			nil, "203.0.113.9",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"IP not in db falls back", withDB,
			nil, "100.64.0.1:4567",
			edgeLoc},
		{"IPv6 not in db falls back", withDB,
			nil, "[2001:db8:2::1]:443",
			edgeLoc},
		{"trusted header beats geoip", withDB,
			hdr(HeaderCFIPCountry, "US"), "10.1.2.3:4567",
			Location{Point: us, Country: "US", Source: SourceHeader}},
		{"untrusted header loses to geoip", withDB,
			hdr(HeaderCFIPCountry, "US"), "203.0.113.9:4567",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},

		// X-Forwarded-For.
		{"xff off: trusted peer itself is looked up", withDB,
			hdr("X-Forwarded-For", "203.0.113.9"), "10.1.2.3:4567",
			edgeLoc},
		{"xff: rightmost untrusted entry", xff,
			hdr("X-Forwarded-For", "198.51.100.20, 203.0.113.9, 10.9.9.9"), "10.1.2.3:4567",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"xff: spoofed leftmost entry is not believed", xff,
			hdr("X-Forwarded-For", "2001:db8:1::1, 198.51.100.20"), "10.1.2.3:4567",
			Location{Point: de, Country: "DE", Source: SourceGeoIP}},
		{"xff: across several header lines", xff,
			hdr("X-Forwarded-For", "198.51.100.20", "X-Forwarded-For", "203.0.113.9, 10.0.0.5", "X-Forwarded-For", "fd00::9"), "10.1.2.3:4567",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"xff: IPv6 client", xff,
			hdr("X-Forwarded-For", "2001:db8:1::abcd"), "[fd00::1]:443",
			Location{Point: tokyo, Country: "JP", Source: SourceGeoIP}},
		{"xff: entries with ports", xff,
			hdr("X-Forwarded-For", "[2001:db8:1::abcd]:5555, 10.0.0.1:80"), "10.1.2.3:4567",
			Location{Point: tokyo, Country: "JP", Source: SourceGeoIP}},
		{"xff: ignored from an untrusted peer", xff,
			hdr("X-Forwarded-For", "203.0.113.9"), "198.51.100.20:4567",
			Location{Point: de, Country: "DE", Source: SourceGeoIP}},
		{"xff: garbage stops the walk", xff,
			hdr("X-Forwarded-For", "203.0.113.9, not-an-ip"), "10.1.2.3:4567",
			edgeLoc},
		{"xff: all entries trusted", xff,
			hdr("X-Forwarded-For", "10.0.0.1, 10.0.0.2"), "10.1.2.3:4567",
			edgeLoc},
		{"xff: empty entries skipped", xff,
			hdr("X-Forwarded-For", "203.0.113.9,, ,"), "10.1.2.3:4567",
			Location{Point: london, Country: "GB", Source: SourceGeoIP}},
		{"xff: client not in db", xff,
			hdr("X-Forwarded-For", "100.64.0.1"), "10.1.2.3:4567",
			edgeLoc},
		{"xff: trusted header still wins", xff,
			hdr("X-Forwarded-For", "203.0.113.9", HeaderCFIPCountry, "US"), "10.1.2.3:4567",
			Location{Point: us, Country: "US", Source: SourceHeader}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLocator(t, c.cfg)
			h := c.h
			if h == nil {
				h = http.Header{}
			}
			if got := l.Locate(h, c.remote); got != c.want {
				t.Errorf("Locate(%v, %q) = %+v, want %+v", c.h, c.remote, got, c.want)
			}
		})
	}
}

func TestLocateAfterClose(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GeoIPDatabase = writeDB(t)
	l, err := New(cfg, edge)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Locate(http.Header{}, "203.0.113.9:1"); got.Source != SourceGeoIP {
		t.Fatalf("before Close: %+v", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := l.Locate(http.Header{}, "203.0.113.9:1"); got.Source != SourceEdge {
		t.Fatalf("after Close: %+v", got)
	}
}

// TestLocateConcurrent runs lookups while the database is closed, for the
// race detector.
func TestLocateConcurrent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	cfg.ForwardedFor = true
	cfg.GeoIPDatabase = writeDB(t)
	l, err := New(cfg, edge)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hdr("X-Forwarded-For", "203.0.113.9")
			for i := 0; i < 500; i++ {
				got := l.Locate(h, "10.0.0.1:1")
				if got.Source != SourceGeoIP && got.Source != SourceEdge {
					t.Errorf("unexpected %+v", got)
					return
				}
			}
		}()
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
	wg.Wait()
}

func TestLocateAllocs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8", "fd00::/8"}
	cfg.ForwardedFor = true
	l := newLocator(t, cfg)
	cases := []struct {
		name   string
		h      http.Header
		remote string
	}{
		{"untrusted peer with headers", hdr(HeaderClientLocation, "1,2", "X-Forwarded-For", "203.0.113.9"), "203.0.113.9:1"},
		{"trusted peer, no headers", http.Header{}, "10.0.0.1:1"},
		{"trusted peer, lat,lon", hdr(HeaderClientLocation, "1,2"), "10.0.0.1:1"},
		{"trusted peer, country", hdr(HeaderCFIPCountry, "gb"), "[fd00::1]:1"},
		{"trusted peer, garbage and xff", hdr(HeaderCFIPCountry, "zz", "X-Forwarded-For", "203.0.113.9, 10.0.0.2"), "10.0.0.1:1"},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(100, func() { l.Locate(c.h, c.remote) }); n != 0 {
			t.Errorf("%s: Locate allocates %v times", c.name, n)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	db := writeDB(t)
	notDB := filepath.Join(t.TempDir(), "not.mmdb")
	if err := os.WriteFile(notDB, []byte("this is not a MaxMind database"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := func(c *Config) {}
	cases := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"default", ok, ""},
		{"proxies and db", func(c *Config) {
			c.TrustedProxies = []string{"10.0.0.0/8", "fd00::/8", "192.168.1.7", "::ffff:10.0.0.0/104"}
			c.GeoIPDatabase = db
		}, ""},
		{"no headers", func(c *Config) { c.Headers = nil }, ""},
		{"bad CIDR", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/33"} }, "geo.trusted_proxies[1]: "},
		{"hostname as proxy", func(c *Config) { c.TrustedProxies = []string{"proxy.local"} }, "geo.trusted_proxies[0]: "},
		{"zoned proxy", func(c *Config) { c.TrustedProxies = []string{"fe80::1%eth0"} }, "geo.trusted_proxies[0]: "},
		{"short mapped prefix", func(c *Config) { c.TrustedProxies = []string{"::ffff:0:0/64"} }, "geo.trusted_proxies[0]: "},
		{"empty header", func(c *Config) { c.Headers = []string{"X-Ok", ""} }, "geo.headers[1]: "},
		{"header with space", func(c *Config) { c.Headers = []string{"X Bad"} }, "geo.headers[0]: "},
		{"header with colon", func(c *Config) { c.Headers = []string{"X-Bad:"} }, "geo.headers[0]: "},
		{"missing db", func(c *Config) { c.GeoIPDatabase = filepath.Join(t.TempDir(), "absent.mmdb") }, "geo.geoip_database: "},
		{"not a db", func(c *Config) { c.GeoIPDatabase = notDB }, "geo.geoip_database: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case c.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), c.wantErr)):
				t.Fatalf("Validate() = %v, want prefix %q", err, c.wantErr)
			}
			if _, nerr := New(cfg, edge); (nerr == nil) != (err == nil) {
				t.Fatalf("New and Validate disagree: %v vs %v", nerr, err)
			}
		})
	}
}

func TestNewRejectsBadFallback(t *testing.T) {
	for _, p := range []Point{{91, 0}, {0, 200}} {
		if _, err := New(DefaultConfig(), p); !errors.Is(err, ErrInvalidFallback) {
			t.Errorf("New(fallback %v) = %v, want ErrInvalidFallback", p, err)
		}
	}
}

// ExampleLocator shows the lead's wiring: a trusted load balancer sets the
// location header.
func ExampleLocator() {
	cfg := DefaultConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	l, err := New(cfg, Point{50.11, 8.68})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	h := http.Header{}
	h.Set("CF-IPCountry", "fr")
	fmt.Println(l.Locate(h, "10.0.0.1:443"))
	fmt.Println(l.Locate(h, "198.51.100.7:443"))
	// Output:
	// {{48.8566 2.3522} FR header}
	// {{50.11 8.68}  edge}
}

// FuzzLocate feeds arbitrary header values and peer addresses to a Locator
// that trusts every peer, with a GeoIP database, so every path runs: it must never panic and must
// always return a valid point with a known source.
func FuzzLocate(f *testing.F) {
	f.Add("51.5,-0.1", "gb", "203.0.113.9, 10.0.0.1", "10.0.0.1:1")
	f.Add("91,0", "XX", "[2001:db8:1::1]:80,,", "[fd00::1%eth0]:1")
	f.Add("", "", "not-an-ip", "@")
	f.Add("1,2,3", "zz", "::ffff:203.0.113.9", "203.0.113.9")
	cfg := DefaultConfig()
	cfg.TrustedProxies = []string{"0.0.0.0/1", "128.0.0.0/1", "::/0"}
	cfg.ForwardedFor = true
	cfg.GeoIPDatabase = writeDB(f)
	l := newLocator(f, cfg)
	f.Fuzz(func(t *testing.T, loc, country, xff, remote string) {
		h := http.Header{}
		h.Set(HeaderClientLocation, loc)
		h.Set(HeaderCFIPCountry, country)
		h.Set("X-Forwarded-For", xff)
		got := l.Locate(h, remote)
		if !got.Point.Valid() {
			t.Fatalf("invalid point %+v", got)
		}
		switch got.Source {
		case SourceHeader, SourceGeoIP, SourceEdge:
		default:
			t.Fatalf("unexpected source %+v", got)
		}
	})
}
