package main

import (
	"testing"
	"time"
)

func TestAddedRatio(t *testing.T) {
	us := time.Microsecond
	for _, tc := range []struct {
		name        string
		d, p, e     time.Duration
		want        float64
		wantClamped bool
	}{
		{"plain", 100 * us, 200 * us, 250 * us, 1.5, false},
		{"edge faster than proxy", 100 * us, 300 * us, 200 * us, 0.5, false},
		{"proxy adds nothing", 100 * us, 100 * us, 150 * us, 50, true},
		{"proxy faster than direct", 100 * us, 90 * us, 102 * us, 2, true},
	} {
		got := addedRatio(tc.d, tc.p, tc.e)
		if got.v != tc.want || got.clamped != tc.wantClamped {
			t.Errorf("%s: got %v (clamped %v), want %v (clamped %v)", tc.name, got.v, got.clamped, tc.want, tc.wantClamped)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
