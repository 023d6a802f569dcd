// Package relay is a userspace WAN emulator: a UDP and TCP relay that
// delays every datagram or chunk by a configured one-way delay, with
// jitter and (UDP) loss, and can partition the path on command. Meridian's
// CI kernel has no netem, so tests and benchmarks put this relay between
// two nodes instead, in process or as the scripts/wan command.
//
// Delay is per datagram or chunk, never serialised: a datagram read at t
// leaves at t+delay(+jitter) however many are in flight, as on a real
// link. TCP chunks keep their order (a later chunk never leaves before an
// earlier one). Delay applies in each direction, so the round trip grows
// by twice the delay.
//
// It is a test tool: it must never run in a node, and it forwards only to
// the one target it is given.
package relay

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Relay.
type Config struct {
	// Target is the host:port traffic is relayed to.
	Target string
	// UDPListen and TCPListen are the addresses to listen on; empty
	// turns that protocol off. Use 127.0.0.1:0 for a free port.
	UDPListen, TCPListen string
	// Delay is the one-way delay added in each direction.
	Delay time.Duration
	// Jitter adds a uniform random extra delay in [0, Jitter).
	Jitter time.Duration
	// Loss is the probability, from 0 to 1, that a UDP datagram is dropped.
	Loss float64
	// DelayFrom adds a one-way delay, in each direction, to the UDP
	// traffic of the clients at these host:port addresses, on top of
	// Delay. One relay in front of a node thus places each of its peers
	// at its own distance, when each peer sends from one known socket
	// (a QUIC endpoint does).
	DelayFrom map[string]time.Duration
}

// DefaultConfig relays UDP (QUIC) from a free port on 127.0.0.1, with
// no delay, jitter or loss; Target must still be set.
func DefaultConfig() Config {
	return Config{UDPListen: "127.0.0.1:0"}
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.Target == "" {
		return errors.New("relay: Target is required")
	}
	if c.UDPListen == "" && c.TCPListen == "" {
		return errors.New("relay: give UDPListen, TCPListen or both")
	}
	if c.Delay < 0 || c.Jitter < 0 || c.Loss < 0 || c.Loss > 1 {
		return errors.New("relay: Delay and Jitter must not be negative, Loss must be in [0, 1]")
	}
	return nil
}

// Relay is a running relay.
type Relay struct {
	target    string
	udp       *net.UDPConn
	tcp       net.Listener
	delay     atomic.Int64 // nanoseconds
	jitter    atomic.Int64 // nanoseconds
	loss      atomic.Uint64
	partition atomic.Bool
	resume    chan struct{} // replaced when a partition starts, closed when it ends
	resumeMu  sync.Mutex

	mu       sync.Mutex
	sessions map[string]*udpSession
	// delayFrom is Config.DelayFrom, read-only after Start.
	delayFrom map[string]time.Duration
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup

	// Counters, for the admin state: datagrams and chunks forwarded and
	// dropped, and TCP connections accepted.
	Forwarded, Dropped, Accepted atomic.Int64
	// UDPBytes counts the UDP payload bytes of datagrams forwarded, both
	// directions, so a benchmark can tell what an idle link costs.
	UDPBytes atomic.Int64
}

// Start listens and relays until Close.
func Start(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{target: cfg.Target, sessions: map[string]*udpSession{}, conns: map[net.Conn]struct{}{}, resume: make(chan struct{}), delayFrom: cfg.DelayFrom}
	close(r.resume)
	r.Set(cfg.Delay, cfg.Jitter, cfg.Loss)
	if cfg.UDPListen != "" {
		ua, err := net.ResolveUDPAddr("udp", cfg.UDPListen)
		if err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		if r.udp, err = net.ListenUDP("udp", ua); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		r.udp.SetReadBuffer(4 << 20)
		r.wg.Add(1)
		go r.serveUDP()
	}
	if cfg.TCPListen != "" {
		ln, err := net.Listen("tcp", cfg.TCPListen)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("relay: %w", err)
		}
		r.tcp = ln
		r.wg.Add(1)
		go r.serveTCP()
	}
	return r, nil
}

// UDPAddr returns the UDP listen address, or "" when UDP is off.
func (r *Relay) UDPAddr() string {
	if r.udp == nil {
		return ""
	}
	return r.udp.LocalAddr().String()
}

// TCPAddr returns the TCP listen address, or "" when TCP is off.
func (r *Relay) TCPAddr() string {
	if r.tcp == nil {
		return ""
	}
	return r.tcp.Addr().String()
}

// Set changes delay, jitter and loss for traffic read from now on.
func (r *Relay) Set(delay, jitter time.Duration, loss float64) {
	r.delay.Store(int64(delay))
	r.jitter.Store(int64(jitter))
	r.loss.Store(uint64(loss * 1e9))
}

// Partition cuts the path (on) or heals it. While cut, UDP datagrams are
// dropped and TCP bytes are held, as a real partition stalls a TCP
// connection until it heals.
func (r *Relay) Partition(on bool) {
	r.resumeMu.Lock()
	defer r.resumeMu.Unlock()
	if on == r.partition.Load() {
		return
	}
	if on {
		r.resume = make(chan struct{})
		r.partition.Store(true)
	} else {
		r.partition.Store(false)
		close(r.resume)
	}
}

func (r *Relay) resumed() <-chan struct{} {
	r.resumeMu.Lock()
	defer r.resumeMu.Unlock()
	return r.resume
}

// Close stops the relay and closes every relayed connection.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for _, s := range r.sessions {
		s.close()
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	if r.udp != nil {
		r.udp.Close()
	}
	if r.tcp != nil {
		r.tcp.Close()
	}
	r.Partition(false)
	r.wg.Wait()
	return nil
}

// due is when something read now leaves the relay.
func (r *Relay) due(now time.Time) time.Time {
	d := time.Duration(r.delay.Load())
	if j := r.jitter.Load(); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return now.Add(d)
}

func (r *Relay) lose() bool {
	if r.partition.Load() {
		return true
	}
	l := r.loss.Load()
	return l > 0 && rand.Uint64N(1e9) < l
}

// ---- UDP ----

// udpSession relays one client address: its own socket to the target,
// so replies can be told apart.
type udpSession struct {
	client *net.UDPAddr
	up     *net.UDPConn
	toUp   *delayLine
	toDown *delayLine
	extra  time.Duration // Config.DelayFrom for this client
	last   atomic.Int64  // unix nanoseconds of the last datagram either way
}

// sessionIdle is how long a UDP session may carry nothing before it is
// dropped, so a long-running relay does not keep a socket per client port
// it ever saw.
const sessionIdle = 2 * time.Minute

func (s *udpSession) close() {
	s.up.Close()
	s.toUp.close()
	s.toDown.close()
}

func (r *Relay) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		now := time.Now()
		if r.lose() {
			r.Dropped.Add(1)
			continue
		}
		s, err := r.session(from)
		if err != nil {
			continue
		}
		s.last.Store(now.UnixNano())
		pkt := append([]byte(nil), buf[:n]...)
		s.toUp.push(r.due(now).Add(s.extra), pkt)
	}
}

func (r *Relay) session(from *net.UDPAddr) (*udpSession, error) {
	key := from.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sessions[key]; s != nil {
		return s, nil
	}
	if r.closed {
		return nil, net.ErrClosed
	}
	ta, err := net.ResolveUDPAddr("udp", r.target)
	if err != nil {
		return nil, err
	}
	up, err := net.DialUDP("udp", nil, ta)
	if err != nil {
		return nil, err
	}
	up.SetReadBuffer(4 << 20)
	s := &udpSession{client: from, up: up, extra: r.delayFrom[key]}
	s.last.Store(time.Now().UnixNano())
	s.toUp = newDelayLine(func(b []byte) {
		up.Write(b)
		r.Forwarded.Add(1)
		r.UDPBytes.Add(int64(len(b)))
	})
	s.toDown = newDelayLine(func(b []byte) {
		r.udp.WriteToUDP(b, from)
		r.Forwarded.Add(1)
		r.UDPBytes.Add(int64(len(b)))
	})
	r.sessions[key] = s
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			up.SetReadDeadline(time.Now().Add(sessionIdle))
			n, err := up.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if time.Since(time.Unix(0, s.last.Load())) < sessionIdle {
						continue
					}
					r.mu.Lock()
					if r.sessions[key] == s {
						delete(r.sessions, key)
					}
					r.mu.Unlock()
					s.close()
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
					continue // ICMP port unreachable and the like
				}
				return
			}
			now := time.Now()
			s.last.Store(now.UnixNano())
			if r.lose() {
				r.Dropped.Add(1)
				continue
			}
			s.toDown.push(r.due(now).Add(s.extra), append([]byte(nil), buf[:n]...))
		}
	}()
	return s, nil
}

// delayLine sends each item at its due time from one goroutine, earliest
// first. Items are independent: one waits only for its own due time.
type delayLine struct {
	send   func([]byte)
	mu     sync.Mutex
	q      itemHeap
	seq    uint64
	wake   chan struct{}
	done   chan struct{}
	closed bool
}

type item struct {
	due time.Time
	seq uint64 // ties keep arrival order
	b   []byte
}

type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].seq < h[j].seq
	}
	return h[i].due.Before(h[j].due)
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newDelayLine(send func([]byte)) *delayLine {
	d := &delayLine{send: send, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go d.run()
	return d
}

func (d *delayLine) push(due time.Time, b []byte) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.seq++
	heap.Push(&d.q, item{due: due, seq: d.seq, b: b})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *delayLine) close() {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.done)
	}
	d.mu.Unlock()
}

func (d *delayLine) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d.mu.Lock()
		var wait time.Duration = -1
		var out [][]byte
		now := time.Now()
		for d.q.Len() > 0 {
			if w := d.q[0].due.Sub(now); w > 0 {
				wait = w
				break
			}
			out = append(out, heap.Pop(&d.q).(item).b)
		}
		d.mu.Unlock()
		for _, b := range out {
			d.send(b)
		}
		if len(out) > 0 {
			continue // sending took time; look again
		}
		if wait >= 0 && wait <= spinBelow {
			spinUntil(now.Add(wait))
			continue
		}
		var tc <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait - spinBelow)
			tc = timer.C
		}
		select {
		case <-d.done:
			return
		case <-d.wake:
		case <-tc:
		}
	}
}

// spinBelow is how close to its due time a sender stops sleeping and
// spins: a timer wakes a goroutine a few hundred microseconds late on a
// loaded machine, which would add that much to every emulated leg.
const spinBelow = time.Millisecond

// spinUntil yields the processor until t.
func spinUntil(t time.Time) {
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// ---- TCP ----

func (r *Relay) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		r.Accepted.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relayTCP(c)
		}()
	}
}

func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) relayTCP(down net.Conn) {
	if !r.track(down) {
		return
	}
	defer r.untrack(down)
	// The kernel accepted the client at once, but on the emulated path
	// the SYN reaches the target after one delay, and the client's first
	// byte can leave only when the SYN-ACK is back, so it reaches the
	// target after three: the handshake's round trip is charged to it.
	t0 := time.Now()
	d := time.Duration(r.delay.Load())
	time.Sleep(d)
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	if !r.track(up) {
		return
	}
	defer r.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pipe(up, down, t0.Add(3*d)) }()
	go func() { defer wg.Done(); r.pipe(down, up, time.Time{}) }()
	wg.Wait()
}

type chunk struct {
	due time.Time
	b   []byte
}

// pipe copies src to dst, each chunk leaving at its read time plus the
// delay (never before the chunk ahead of it). The reader never waits for
// the writer, so delay does not serialise. Nothing leaves before floor.
func (r *Relay) pipe(dst, src net.Conn, floor time.Time) {
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		last := floor
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				due := r.due(time.Now())
				if due.Before(last) {
					due = last
				}
				last = due
				q <- chunk{due: due, b: buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		for r.partition.Load() {
			<-r.resumed()
		}
		if w := time.Until(c.due); w > spinBelow {
			time.Sleep(w - spinBelow)
		}
		spinUntil(c.due)
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range q {
			}
			return
		}
	}
	// src ended: pass the half-close on.
	if tc, ok := dst.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// ---- admin ----

// State is the relay's settings and counters, as the admin port shows them.
type State struct {
	Target    string  `json:"target"`
	UDP       string  `json:"udp,omitempty"`
	TCP       string  `json:"tcp,omitempty"`
	DelayMS   float64 `json:"delay_ms"`
	JitterMS  float64 `json:"jitter_ms"`
	Loss      float64 `json:"loss"`
	Partition bool    `json:"partition"`
	Forwarded int64   `json:"forwarded"`
	Dropped   int64   `json:"dropped"`
	Accepted  int64   `json:"tcp_accepted"`
}

// State returns the current settings and counters.
func (r *Relay) State() State {
	return State{
		Target: r.target, UDP: r.UDPAddr(), TCP: r.TCPAddr(),
		DelayMS:   float64(r.delay.Load()) / 1e6,
		JitterMS:  float64(r.jitter.Load()) / 1e6,
		Loss:      float64(r.loss.Load()) / 1e9,
		Partition: r.partition.Load(),
		Forwarded: r.Forwarded.Load(), Dropped: r.Dropped.Load(), Accepted: r.Accepted.Load(),
	}
}

// AdminHandler serves the admin API:
//
//	GET  /                          the State as JSON
//	POST /partition?on=true|false   cut or heal the path
//	POST /set?delay=20ms&jitter=1ms&loss=0.01   change what is given
func (r *Relay) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	state := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.State())
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, req *http.Request) { state(w) })
	mux.HandleFunc("POST /partition", func(w http.ResponseWriter, req *http.Request) {
		on, err := strconv.ParseBool(req.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "on must be true or false", http.StatusBadRequest)
			return
		}
		r.Partition(on)
		state(w)
	})
	mux.HandleFunc("POST /set", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		delay, jitter := time.Duration(r.delay.Load()), time.Duration(r.jitter.Load())
		loss := float64(r.loss.Load()) / 1e9
		var err error
		if v := q.Get("delay"); v != "" && err == nil {
			delay, err = time.ParseDuration(v)
		}
		if v := q.Get("jitter"); v != "" && err == nil {
			jitter, err = time.ParseDuration(v)
		}
		if v := q.Get("loss"); v != "" && err == nil {
			loss, err = strconv.ParseFloat(v, 64)
		}
		if err == nil && (delay < 0 || jitter < 0 || loss < 0 || loss > 1) {
			err = errors.New("out of range")
		}
		if err != nil {
			http.Error(w, "bad value: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Set(delay, jitter, loss)
		state(w)
	})
	return mux
}

var _ io.Closer = (*Relay)(nil)
