package geo

import (
	"net/http"
	"testing"
)

var (
	sinkLoc Location
	sinkKm  float64
)

func BenchmarkDistanceKm(b *testing.B) {
	a, c := Point{51.5074, -0.1278}, Point{35.6762, 139.6503}
	for b.Loop() {
		sinkKm = DistanceKm(a, c)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, in := range []string{"51.5074,-0.1278", "gb", "garbage"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkLoc, _ = Parse(in)
			}
		})
	}
}

func BenchmarkLocate(b *testing.B) {
	cfg := DefaultConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8", "172.16.0.0/12", "fd00::/8"}
	cfg.ForwardedFor = true
	noDB := newLocator(b, cfg)
	cfg.GeoIPDatabase = writeDB(b)
	withDB := newLocator(b, cfg)

	cases := []struct {
		name   string
		l      *Locator
		h      http.Header
		remote string
	}{
		{"untrusted/fallback", noDB, hdr(HeaderCFIPCountry, "GB"), "198.51.100.7:52000"},
		{"trusted/header-latlon", noDB, hdr(HeaderClientLocation, "51.5074,-0.1278"), "10.1.2.3:52000"},
		{"trusted/header-country", noDB, hdr(HeaderCFIPCountry, "gb"), "[fd00::1]:52000"},
		{"geoip/miss", withDB, http.Header{}, "100.64.0.1:52000"},
		{"geoip/country", withDB, http.Header{}, "198.51.100.20:52000"},
		{"geoip/city", withDB, http.Header{}, "203.0.113.9:52000"},
		{"geoip/xff-city", withDB, hdr("X-Forwarded-For", "203.0.113.9, 10.0.0.5"), "10.1.2.3:52000"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkLoc = c.l.Locate(c.h, c.remote)
			}
		})
	}
}
