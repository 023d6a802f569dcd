// Package gossipnet is an in-memory network for memberlist, so a thousand
// gossip nodes fit in one process without a thousand UDP and TCP socket
// pairs (edge/gossip Config.Transport). Packets behave as UDP does: each
// goes into the receiver's bounded queue or, when the queue is full or the
// receiver is gone, is lost; the sender never blocks. Streams are
// net.Pipe pairs handed to the receiver's accept channel, failing after
// the dial timeout. A transport that is shut down is unreachable, as a
// crashed host is.
//
// It is test support: production code must never import it. It never
// delays or reorders packets on purpose and models no latency.
package gossipnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// QueueLen and QueueBytes bound each transport's packet queue: a packet
// is lost when the queue holds QueueLen packets, or as many packets of
// its size as fill QueueBytes. 256 packets is about what Linux's default
// UDP receive buffer (208 KiB) holds of memberlist's 1,400-byte gossip
// packets, so a starved receiver loses packets as a real one would; the
// byte bound keeps a thousand transports near a gigabyte between them
// when packets are bigger (gossip.Config.PacketSize).
const (
	QueueLen   = 256
	QueueBytes = 1 << 20
)

// Port is the port every transport advertises; addresses differ by IP.
const Port = 7946

// ErrUnreachable is returned when dialing an address nobody holds, or
// whose transport shut down, or that does not accept within the timeout.
var ErrUnreachable = errors.New("gossipnet: unreachable")

// Network connects the transports it made. The zero value is not ready:
// use New.
type Network struct {
	mu    sync.RWMutex
	nodes map[string]*Transport
	next  int
}

// New returns an empty network.
func New() *Network { return &Network{nodes: map[string]*Transport{}} }

// NewTransport returns a transport with the next free address,
// 10.a.b.c:Port. It is safe for concurrent use with running transports.
func (n *Network) NewTransport() *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	i := n.next
	ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
	t := &Transport{
		net:     n,
		ip:      ip,
		addr:    addr(net.JoinHostPort(ip.String(), fmt.Sprint(Port))),
		packets: make(chan *memberlist.Packet, QueueLen),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	n.nodes[string(t.addr)] = t
	return t
}

// Len is how many transports are reachable.
func (n *Network) Len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.nodes)
}

func (n *Network) lookup(a string) *Transport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.nodes[a]
}

// addr is a transport's address as a net.Addr.
type addr string

func (a addr) Network() string { return "gossipnet" }
func (a addr) String() string  { return string(a) }

// Transport is one node's memberlist.Transport on a Network.
type Transport struct {
	net     *Network
	ip      net.IP
	addr    addr
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var _ memberlist.Transport = (*Transport)(nil)

// Addr is the transport's host:port.
func (t *Transport) Addr() string { return string(t.addr) }

// FinalAdvertiseAddr returns the transport's own address whatever is asked:
// the network assigns addresses.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) { return t.ip, Port, nil }

// WriteTo queues a copy of b at the transport holding addr, or drops it.
func (t *Transport) WriteTo(b []byte, a string) (time.Time, error) {
	now := time.Now()
	dest := t.net.lookup(a)
	if dest == nil {
		return now, nil // lost, as a datagram to a dead host is
	}
	if len(dest.packets) >= max(1, QueueBytes/max(len(b), 1)) {
		return now, nil // lost: the buffer is full for a packet this big
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.addr, Timestamp: now}
	select {
	case <-dest.done:
	case dest.packets <- p:
	default: // queue full: lost
	}
	return now, nil
}

// PacketCh is where packets for this transport arrive.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout connects a stream to addr, or fails within timeout.
func (t *Transport) DialTimeout(a string, timeout time.Duration) (net.Conn, error) {
	dest := t.net.lookup(a)
	if dest == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, a)
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streams <- remote:
		return local, nil
	case <-dest.done:
	case <-t.done:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, a)
}

// StreamCh is where streams dialed to this transport arrive.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown makes the transport unreachable. Packets already queued stay
// readable; nothing new arrives. It is idempotent.
func (t *Transport) Shutdown() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		delete(t.net.nodes, string(t.addr))
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}
