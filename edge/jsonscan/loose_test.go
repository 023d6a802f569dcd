package jsonscan

import (
	"math"
	"testing"
)

func TestLooseInt(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{`12`, 12}, {`-3`, -3}, {`2.9`, 2}, {`-2.9`, -2}, {`1e3`, 1000}, {`1e400`, math.MaxInt64}, {`-1e400`, math.MinInt64},
		{`9223372036854775807`, math.MaxInt64}, {`99999999999999999999`, math.MaxInt64}, {`-99999999999999999999`, math.MinInt64},
		{`"10"`, 10}, {`"2.5"`, 2}, {`"-7"`, -7}, {`"1e400"`, math.MaxInt64}, {`"x"`, 0}, {`""`, 0}, {`"-"`, 0}, {`"NaN"`, 0},
		{`true`, 1}, {`false`, 0}, {`null`, 0}, {`{"a":1}`, 0}, {`[1]`, 0},
	} {
		s := New([]byte(c.in))
		if got := s.LooseInt(); got != c.want {
			t.Errorf("%s: LooseInt = %d, want %d", c.in, got, c.want)
		}
		if err := s.End(); err != nil {
			t.Errorf("%s: value not consumed: %v", c.in, err)
		}
	}
}

// FuzzLooseInt checks that LooseInt never panics, consumes exactly one
// value, and reads a number as LooseIntText reads its text.
func FuzzLooseInt(f *testing.F) {
	for _, s := range []string{`1`, `-2.5e3`, `"7"`, `true`, `null`, `[1,{}]`, `1e400`, `"NaN"`, `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		s := New(doc)
		kind := s.Peek()
		n := s.LooseInt()
		if s.Err() != nil {
			return
		}
		if kind == Number {
			raw := New(doc).Raw()
			if want := LooseIntText(string(raw)); n != want {
				t.Fatalf("%q: LooseInt %d, LooseIntText %d", doc, n, want)
			}
		}
		if kind == Null || kind == Object || kind == Array {
			if n != 0 {
				t.Fatalf("%q: LooseInt %d, want 0", doc, n)
			}
		}
	})
}

func TestOptStr(t *testing.T) {
	for in, want := range map[string]string{`"a\n"`: "a\n", `1`: "", `null`: "", `{"a":"b"}`: "", `["x"]`: "", `true`: ""} {
		s := New([]byte(in))
		if got := s.OptStr(); got != want {
			t.Errorf("%s: OptStr = %q, want %q", in, got, want)
		}
		if err := s.End(); err != nil {
			t.Errorf("%s: value not consumed: %v", in, err)
		}
	}
}
