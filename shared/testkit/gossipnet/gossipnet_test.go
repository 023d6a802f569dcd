package gossipnet

import (
	"errors"
	"io"
	"testing"
	"time"
)

func TestPacketsAndStreams(t *testing.T) {
	n := New()
	a, b := n.NewTransport(), n.NewTransport()
	if a.Addr() == b.Addr() {
		t.Fatalf("two transports share %s", a.Addr())
	}
	msg := []byte("ping")
	if _, err := a.WriteTo(msg, b.Addr()); err != nil {
		t.Fatal(err)
	}
	msg[0] = 'X' // the network holds its own copy
	p := <-b.PacketCh()
	if string(p.Buf) != "ping" || p.From.String() != a.Addr() {
		t.Fatalf("got %q from %s, want ping from %s", p.Buf, p.From, a.Addr())
	}

	done := make(chan []byte)
	go func() {
		c := <-b.StreamCh()
		buf, _ := io.ReadAll(c)
		done <- buf
	}()
	c, err := a.DialTimeout(b.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("state"))
	c.Close()
	if got := <-done; string(got) != "state" {
		t.Fatalf("stream carried %q", got)
	}
}

func TestFullQueueAndShutdownLoseTraffic(t *testing.T) {
	n := New()
	a, b := n.NewTransport(), n.NewTransport()
	for range QueueLen + 10 { // never blocks the sender
		a.WriteTo([]byte{1}, b.Addr())
	}
	if got := len(b.packets); got != QueueLen {
		t.Fatalf("queue holds %d packets, want %d", got, QueueLen)
	}
	b.Shutdown()
	b.Shutdown()
	if n.Len() != 1 {
		t.Fatalf("%d reachable after shutdown, want 1", n.Len())
	}
	if _, err := a.DialTimeout(b.Addr(), time.Second); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dial to a shut-down transport: %v, want ErrUnreachable", err)
	}
	c := n.NewTransport()
	if _, err := a.DialTimeout(c.Addr(), 10*time.Millisecond); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dial nobody accepts: %v, want ErrUnreachable", err)
	}
}

func TestBigPacketsFillTheQueueSooner(t *testing.T) {
	n := New()
	a, b := n.NewTransport(), n.NewTransport()
	big := make([]byte, 64000)
	for range 40 {
		a.WriteTo(big, b.Addr())
	}
	if got, want := len(b.packets), QueueBytes/len(big); got != want {
		t.Fatalf("queue holds %d packets of 64,000 bytes, want %d", got, want)
	}
}
