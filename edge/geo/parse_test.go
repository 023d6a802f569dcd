package geo

import (
	"testing"
)

func TestParse(t *testing.T) {
	gb, _ := Country("GB")
	cases := []struct {
		in   string
		ok   bool
		want Location
	}{
		{"51.5,-0.12", true, Location{Point: Point{51.5, -0.12}, Source: SourceHeader}},
		{" 51.5 , -0.12 ", true, Location{Point: Point{51.5, -0.12}, Source: SourceHeader}},
		{"+90,-180", true, Location{Point: Point{90, -180}, Source: SourceHeader}},
		{"-90,180", true, Location{Point: Point{-90, 180}, Source: SourceHeader}},
		{"0,0", true, Location{Point: Point{0, 0}, Source: SourceHeader}},
		{"1.,.5", true, Location{Point: Point{1, 0.5}, Source: SourceHeader}},
		{"GB", true, Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{"gb", true, Location{Point: gb, Country: "GB", Source: SourceHeader}},
		{" gB ", true, Location{Point: gb, Country: "GB", Source: SourceHeader}},

		{"91,0", false, Location{}},
		{"0,181", false, Location{}},
		{"-90.0001,0", false, Location{}},
		{"NaN,1", false, Location{}},
		{"1,NaN", false, Location{}},
		{"Inf,1", false, Location{}},
		{"1e1,2", false, Location{}},
		{"0x1p-2,0", false, Location{}},
		{"1_0,2", false, Location{}},
		{"1,2,3", false, Location{}},
		{"1,2, 3,4", false, Location{}},
		{",", false, Location{}},
		{"1,", false, Location{}},
		{",1", false, Location{}},
		{"-,1", false, Location{}},
		{".,1", false, Location{}},
		{"1..2,3", false, Location{}},
		{"--1,3", false, Location{}},
		{"1 2,3", false, Location{}},
		{"", false, Location{}},
		{"   ", false, Location{}},
		{"garbage", false, Location{}},
		{"XX", false, Location{}}, // Cloudflare: unknown
		{"T1", false, Location{}}, // Cloudflare: Tor
		{"GBR", false, Location{}},
		{"1.000000000000000000000000001,2", false, Location{}}, // too long
	}
	for _, c := range cases {
		got, ok := Parse(c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	for _, in := range []string{"51.5,-0.12", "gb", "garbage", "NaN,1", "1,2,3"} {
		if n := testing.AllocsPerRun(100, func() { Parse(in) }); n != 0 {
			t.Errorf("Parse(%q) allocates %v times", in, n)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"51.5,-0.12", "gb", "GB", "91,0", "NaN,1", "1,2,3", "", "garbage",
		"-0,-0", "+90,+180", "1e308,1", "00000000000000000000090,0", " de ", "1.,.5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, ok := Parse(s)
		if !ok {
			if loc != (Location{}) {
				t.Fatalf("Parse(%q) failed but returned %+v", s, loc)
			}
			return
		}
		if !loc.Point.Valid() {
			t.Fatalf("Parse(%q) = %+v: invalid point", s, loc)
		}
		if loc.Source != SourceHeader {
			t.Fatalf("Parse(%q) source %q", s, loc.Source)
		}
		if loc.Country != "" {
			if _, known := Country(loc.Country); !known || loc.Country[0] > 'Z' || loc.Country[1] > 'Z' {
				t.Fatalf("Parse(%q) country %q", s, loc.Country)
			}
		}
	})
}
