package geo

import (
	"math"
	"testing"
)

func TestDistanceKm(t *testing.T) {
	london, _ := Country("GB")
	paris, _ := Country("FR")
	cases := []struct {
		name      string
		a, b      Point
		want, tol float64
	}{
		{"London-Paris", london, paris, 344, 5},
		{"same point", london, london, 0, 1e-9},
		{"antipodes", Point{0, 0}, Point{0, 180}, 20015.1, 1},
		{"pole to pole", Point{90, 0}, Point{-90, 0}, 20015.1, 1},
		{"antimeridian is short", Point{0, 179.5}, Point{0, -179.5}, 111.2, 0.5},
		{"one degree of latitude", Point{0, 0}, Point{1, 0}, 111.19, 0.05},
		{"near-antipodes", Point{45, 10}, Point{-45, -170}, 20015.1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := DistanceKm(c.a, c.b)
			if math.Abs(got-c.want) > c.tol {
				t.Errorf("DistanceKm(%v, %v) = %.3f km, want %.1f ± %.1f", c.a, c.b, got, c.want, c.tol)
			}
			if back := DistanceKm(c.b, c.a); math.Abs(back-got) > 1e-6 {
				t.Errorf("not symmetric: %.6f vs %.6f", got, back)
			}
		})
	}
}

func TestPointValid(t *testing.T) {
	cases := []struct {
		p    Point
		want bool
	}{
		{Point{0, 0}, true},
		{Point{90, 180}, true},
		{Point{-90, -180}, true},
		{Point{90.0001, 0}, false},
		{Point{0, -180.0001}, false},
		{Point{math.NaN(), 0}, false},
		{Point{0, math.NaN()}, false},
		{Point{math.Inf(1), 0}, false},
	}
	for _, c := range cases {
		if got := c.p.Valid(); got != c.want {
			t.Errorf("%v.Valid() = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestCountry(t *testing.T) {
	if n := len(countries); n < 80 {
		t.Errorf("country table has %d entries, want at least 80", n)
	}
	if len(countries) != len(countryTable) {
		t.Errorf("country table has duplicate codes: %d rows, %d codes", len(countryTable), len(countries))
	}
	for _, c := range countryTable {
		if !c.point.Valid() {
			t.Errorf("%s: invalid point %v", c.code, c.point)
		}
		if len(c.code) != 2 || !validCode(c.code) || c.code[0] > 'Z' || c.code[1] > 'Z' {
			t.Errorf("%q is not an upper-case alpha-2 code", c.code)
		}
	}
	// Every EU/EEA member and every G20 country must be known.
	required := []string{
		"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
		"IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
		"IS", "LI", "NO", "CH",
		"AR", "AU", "BR", "CA", "CN", "IN", "ID", "JP", "KR", "MX", "RU", "SA", "ZA", "TR", "GB", "US",
	}
	for _, code := range required {
		if _, ok := Country(code); !ok {
			t.Errorf("Country(%q) unknown", code)
		}
	}
	lower, ok1 := Country("de")
	mixed, ok2 := Country("De")
	upper, ok3 := Country("DE")
	if !ok1 || !ok2 || !ok3 || lower != upper || mixed != upper {
		t.Errorf("Country is not case-insensitive: %v %v %v", lower, mixed, upper)
	}
	for _, bad := range []string{"", "D", "DEU", "XX", "T1", "1A", "ÄÖ", "d\x00"} {
		if p, ok := Country(bad); ok {
			t.Errorf("Country(%q) = %v, true; want unknown", bad, p)
		}
	}
	// Sanity: Berlin is in Germany's neighbourhood, not swapped lat/lon.
	if d := DistanceKm(upper, Point{52.52, 13.40}); d > 1 {
		t.Errorf("DE is %.1f km from Berlin", d)
	}
}
