package gossip

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport wraps memberlist's NetTransport (or an injected
// Config.Transport) to count the bytes this node
// sends and, for fault injection in tests, to drop traffic to blocked
// addresses. Bytes received are not counted: summed over a cluster, sent
// equals received.
type transport struct {
	memberlist.Transport
	packetSent atomic.Uint64 // UDP bytes
	streamSent atomic.Uint64 // TCP bytes

	mu      sync.Mutex
	blocked map[string]bool

	streams  chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

var errBlocked = errors.New("gossip: address blocked")

func newTransport(nt memberlist.Transport) *transport {
	t := &transport{
		Transport: nt,
		blocked:   make(map[string]bool),
		streams:   make(chan net.Conn),
		stop:      make(chan struct{}),
	}
	go t.forwardStreams()
	return t
}

// forwardStreams wraps accepted streams so replies are counted too.
func (t *transport) forwardStreams() {
	in := t.Transport.StreamCh()
	for {
		select {
		case c := <-in:
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.streamSent}:
			case <-t.stop:
				c.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *transport) isBlocked(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blocked[addr]
}

// setBlocked drops (or, with on false, stops dropping) everything this node
// sends to addrs.
func (t *transport) setBlocked(on bool, addrs ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		if on {
			t.blocked[a] = true
		} else {
			delete(t.blocked, a)
		}
	}
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isBlocked(addr) {
		return time.Now(), nil // lost on the wire
	}
	t.packetSent.Add(uint64(len(b)))
	return t.Transport.WriteTo(b, addr)
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isBlocked(addr) {
		return nil, errBlocked
	}
	c, err := t.Transport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.streamSent}, nil
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the inner transport's listeners first and the stream relay after them:
// NetTransport.Shutdown waits for its accept loop, which may be handing
// over a just-accepted stream, and only the relay receives it. (Stopping
// the relay first hung Shutdown forever when a peer connected during it.)
// memberlist reads the relayed streams until Shutdown returns.
func (t *transport) Shutdown() error {
	err := t.Transport.Shutdown()
	t.stopOnce.Do(func() { close(t.stop) })
	return err
}

type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}
