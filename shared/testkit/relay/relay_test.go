package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func udpEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T, cfg Config) *Relay {
	t.Helper()
	r, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestUDPDelayIsPerDatagram: a burst of datagrams all arrive about one
// round trip after they were sent, not one round trip after each other.
func TestUDPDelayIsPerDatagram(t *testing.T) {
	const delay = 50 * time.Millisecond
	r := start(t, Config{Target: udpEcho(t), UDPListen: "127.0.0.1:0", Delay: delay})
	c, err := net.Dial("udp", r.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		c.Write([]byte{byte(i)})
		time.Sleep(time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	first := time.Duration(0)
	buf := make([]byte, 16)
	for i := 0; i < n; i++ {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if i == 0 {
			first = time.Since(start)
		}
	}
	all := time.Since(start)
	t.Logf("first echo after %v, all %d after %v", first, n, all)
	if first < 2*delay {
		t.Errorf("first echo after %v, before one round trip (%v)", first, 2*delay)
	}
	// Serialised delay would take n round trips (2s); allow a loaded
	// machine plenty, far below that.
	if all > n*2*delay/2 {
		t.Errorf("the burst took %v: delay is serialised", all)
	}
}

func TestUDPPartitionAndLoss(t *testing.T) {
	r := start(t, Config{Target: udpEcho(t), UDPListen: "127.0.0.1:0"})
	c, err := net.Dial("udp", r.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	echo := func(timeout time.Duration) bool {
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(timeout))
		_, err := c.Read(buf)
		return err == nil
	}
	if !echo(5 * time.Second) {
		t.Fatal("no echo through a healthy relay")
	}
	r.Partition(true)
	if echo(200 * time.Millisecond) {
		t.Fatal("echo through a partition")
	}
	r.Partition(false)
	ok := false
	for i := 0; i < 20 && !ok; i++ {
		ok = echo(time.Second)
	}
	if !ok {
		t.Fatal("no echo after the partition healed")
	}
	r.Set(0, 0, 1)
	if echo(200 * time.Millisecond) {
		t.Fatal("echo at 100% loss")
	}
	if r.State().Dropped == 0 {
		t.Error("drops not counted")
	}
}

func TestTCPDelayAndIntegrity(t *testing.T) {
	const delay = 20 * time.Millisecond
	r := start(t, Config{Target: tcpEcho(t), TCPListen: "127.0.0.1:0", Delay: delay, Jitter: 5 * time.Millisecond})
	c, err := net.Dial("tcp", r.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// Connect round trip plus the ping's round trip.
	if d := time.Since(start); d < 4*delay {
		t.Errorf("first echo after %v, want at least %v", d, 4*delay)
	}
	// A megabyte with jitter comes back in order.
	data := make([]byte, 1<<20)
	rand.Read(data)
	go c.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes reordered or corrupted")
	}
}

func TestAdmin(t *testing.T) {
	r := start(t, Config{Target: udpEcho(t), UDPListen: "127.0.0.1:0"})
	srv := httptest.NewServer(r.AdminHandler())
	defer srv.Close()
	post := func(q string) (int, State) {
		resp, err := http.Post(srv.URL+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s State
		json.NewDecoder(resp.Body).Decode(&s)
		return resp.StatusCode, s
	}
	if code, s := post("/set?delay=20ms&jitter=1ms&loss=0.5"); code != 200 || s.DelayMS != 20 || s.JitterMS != 1 || s.Loss != 0.5 {
		t.Errorf("set: %d %+v", code, s)
	}
	if code, s := post("/partition?on=true"); code != 200 || !s.Partition {
		t.Errorf("partition: %d %+v", code, s)
	}
	if code, _ := post("/set?loss=2"); code != 400 {
		t.Errorf("loss=2 accepted: %d", code)
	}
	if code, _ := post("/partition?on=maybe"); code != 400 {
		t.Errorf("on=maybe accepted: %d", code)
	}
}

// TestUDPDelayFrom: a client listed in DelayFrom waits its own extra
// delay each way; another client of the same relay does not.
func TestUDPDelayFrom(t *testing.T) {
	const extra = 60 * time.Millisecond
	far, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	near, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()
	r := start(t, Config{Target: udpEcho(t), UDPListen: "127.0.0.1:0", DelayFrom: map[string]time.Duration{far.LocalAddr().String(): extra}})
	to, err := net.ResolveUDPAddr("udp", r.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	rtt := func(pc net.PacketConn) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := pc.WriteTo([]byte("ping"), to); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	f, n := rtt(far), rtt(near)
	if f < 2*extra {
		t.Fatalf("the listed client's round trip took %v; want at least %v", f, 2*extra)
	}
	if n >= f {
		t.Fatalf("the unlisted client's round trip took %v, no less than the listed one's %v", n, f)
	}
}
