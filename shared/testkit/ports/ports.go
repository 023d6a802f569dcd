// Package ports hands tests loopback addresses for servers that must know
// their port before they bind it (Raft peers, NATS routes, a node that
// restarts on its old address).
//
// A port taken from the kernel with ":0" and released is drawn from the
// ephemeral range, the same range every outgoing connection's local port
// comes from: between the release and the server's bind, any client in
// any test process on the machine may take it, and CI saw exactly that
// ("bind: address already in use"). Ports handed out here come from
// below the ephemeral range, where no outgoing connection lands, are
// checked free for TCP and UDP, and are never handed out twice by one
// process.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The range ports are drawn from, clipped below the kernel's ephemeral
// range when that starts lower.
const (
	low  = 20000
	high = 32768
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// TB is the part of testing.TB that Addr needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Addr returns "127.0.0.1:port" for a port that is free now, outside the
// ephemeral range, and not handed out before by this process.
func Addr(t TB) string {
	t.Helper()
	p, err := Pick()
	if err != nil {
		t.Fatalf("ports: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// Pick returns a free port as Addr does, for code without a testing.TB
// (benchmarks and chaos runs).
func Pick() (int, error) {
	hi := min(high, ephemeralLow())
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := low + rand.IntN(hi-low)
		if given[p] || !free(p) {
			continue
		}
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d) after 1000 tries", low, hi)
}

func free(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range, or
// high where the range cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return high
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return high
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= low+1000 {
		return high
	}
	return n
}
