package ports

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, are bindable, and never
// repeat within a process.
func TestAddrFreeAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		a := Addr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, ps, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(ps)
		if p < low || p >= min(high, ephemeralLow()) {
			t.Fatalf("port %d outside [%d, %d)", p, low, min(high, ephemeralLow()))
		}
	}
	a := Addr(t)
	l, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("bind %s: %v", a, err)
	}
	l.Close()
}
