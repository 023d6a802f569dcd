// Package link carries forwarded requests between Meridian edge nodes over
// QUIC: when the nearest edge does not hold a model, it sends the request
// to a peer that does, and streams the answer back.
//
// Each node runs one Transport on one UDP socket, used both to listen and
// to dial. Links are mutual TLS 1.3 with node certificates from the
// cluster CA and ALPN "meridian-link/1". There is one persistent
// connection per peer, dialled lazily and kept warm by pings, and
// one QUIC stream per forwarded request, so a request on a warm link
// reaches the peer in half a round trip, and one on a resumed link (0-RTT)
// costs no handshake round trip either.
//
// The forwarding side is a Peer, which implements the gateway's provider
// interface, so a peer edge is just another routing target. The serving
// side hands each request to a Handler (the node's gateway) and streams
// the canonical answer back; the forwarding edge's API surface re-encodes
// it into the client's format.
//
// Invariants:
//   - 0-RTT data can be replayed, so a request carries a random ID and the
//     serving side runs each ID at most once within its replay window, and
//     refuses headers older than that window.
//   - A request crosses at most Config.MaxHops links (carried in the
//     context: WithHops, Hops), so two edges that each route a model to the
//     other cannot loop.
//   - A dialled link that hears no echo of its pings for
//     max(PingMisses × PingInterval, 3 × RTT + PingInterval) is closed
//     (liveness.go): requests waiting on it fail over at once, the peer
//     is Down, and OnPeerDown tells the node. A redial is trusted only
//     after a handshake and an answered ping.
//   - A reset in either direction cancels the work on both sides.
//   - A failure before the first byte is a Retryable *llm.Error, so the
//     gateway fails over; after it, the stream ends with an error, never
//     with io.EOF.
//
// This package must never accept a connection from a certificate outside
// the cluster CA, from one that is not a node certificate (a control-API
// certificate), that names another node than the one dialled, or that
// Config.Authorize refuses (verify.go), and never send a request's cause (which may name hosts)
// across a link: only the client-safe parts of an *llm.Error travel.
package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
)

// ALPN is the protocol name links negotiate; it versions the frames.
const ALPN = "meridian-link/1"

// Handler runs a forwarded request on the serving node: its local engine
// or its providers. Errors are *llm.Error or the context's error.
type Handler func(ctx context.Context, req *llm.Request) (*llm.Response, error)

// Config configures a Transport. Durations are wall-clock time.
type Config struct {
	// NodeID is this node's name; peers check it against its certificate.
	NodeID string
	// Certificate is this node's certificate and key, signed by the
	// cluster CA, used both as server and as client.
	Certificate tls.Certificate
	// GetCertificate, when set, is asked for this node's certificate at
	// every handshake instead of Certificate, so a renewed certificate
	// is used from the next link on.
	GetCertificate func() (*tls.Certificate, error)
	// Authorize, when set, is asked about every peer node, with its
	// certificate, at every handshake and by Revalidate: a non-nil error
	// refuses it (a node the current table does not list, or lists as
	// revoked, or a certificate older than the node's latest join). Nil
	// accepts any node certificate from the CA.
	Authorize func(node string, cert *x509.Certificate) error
	// Caller, when set, names the tenant and key a request is forwarded
	// for, from its context; nil sends the Caller in ctx (WithCaller).
	Caller func(ctx context.Context) Caller
	// RevalidateInterval is how often open links are checked again
	// (Revalidate), so a certificate that expires while its link is up
	// ends the link. Default 30s.
	RevalidateInterval time.Duration
	// CAs holds the cluster CA. Only certificates it signed are accepted,
	// in both directions.
	CAs *x509.CertPool

	// KeepAlivePeriod is how often an idle link sends a QUIC keep-alive
	// when nothing else is sent, so NATs and the peer's idle timer never
	// close a warm link. Pings (PingInterval) make it moot on links to
	// current peers. Default 1s.
	KeepAlivePeriod time.Duration
	// MaxIdleTimeout is QUIC's own idle timeout: the backstop for links
	// to peers that do not answer pings. Default 5s.
	MaxIdleTimeout time.Duration
	// PingInterval is how often a dialled link sends a PING datagram
	// (jittered ±10 %); the peer echoes it. The echoes measure the link's
	// RTT and prove it alive. Default 200ms.
	PingInterval time.Duration
	// PingMisses is how many ping intervals without an echo declare a
	// link dead, unless 3 × RTT + PingInterval is longer: a link is dead
	// after max(PingMisses × PingInterval, 3 × RTT + PingInterval) of
	// silence. Default 4 (800ms on a LAN).
	PingMisses int
	// HandshakeTimeout bounds a dial. Default 5s.
	HandshakeTimeout time.Duration
	// MaxIncomingStreams is how many forwarded requests one peer may have
	// open at once. quic-go's default of 100 is far too few for an edge.
	// Default 10000.
	MaxIncomingStreams int64
	// ReplayWindow is how old a request header may be (by its sender's
	// clock) and how long its ID is remembered; 0-RTT replays inside the
	// window are refused as duplicates, older ones as stale. Clocks of
	// nodes must agree to well within it. Default 30s.
	ReplayWindow time.Duration
	// MaxHops is how many links a request may cross. Default 2.
	MaxHops int
	// MaxFrameBytes caps one frame, in bytes; a request body must fit in
	// one. Default 16 MiB.
	MaxFrameBytes int
	// RedialMin and RedialMax bound the backoff of background redials to
	// a peer whose link died. Defaults 100ms and 1s, so a peer that comes
	// back is linked again within about RedialMax + RedialTimeout.
	RedialMin, RedialMax time.Duration
	// RedialTimeout bounds one background redial: its handshake and the
	// probe (one PING answered) that must succeed before the link is
	// trusted again. A short bound means a dial that started while the
	// peer was dead gives way soon to one that finds it back. Default 1s.
	RedialTimeout time.Duration
	// OnPeerDown, if set, is called on its own goroutine whenever a link
	// to a peer is declared dead or a dial to it fails, with the cause.
	// The node uses it to tell the fleet (gossip suspicion).
	OnPeerDown func(node string, cause error)

	// SessionCache keeps TLS session tickets for 0-RTT resumption. Nil
	// means a fresh LRU cache; tests and benchmarks share one between
	// transports.
	SessionCache tls.ClientSessionCache
	// Logger receives link events. Nil means slog.Default.
	Logger *slog.Logger
	// Registerer receives the link metrics. Nil means none.
	Registerer prometheus.Registerer
	// Now is the clock for replay checks. Nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the timings and limits described on Config.
func DefaultConfig() Config {
	return Config{
		KeepAlivePeriod:    time.Second,
		MaxIdleTimeout:     5 * time.Second,
		PingInterval:       200 * time.Millisecond,
		PingMisses:         4,
		HandshakeTimeout:   5 * time.Second,
		MaxIncomingStreams: 10000,
		ReplayWindow:       30 * time.Second,
		MaxHops:            2,
		MaxFrameBytes:      16 << 20,
		RedialMin:          100 * time.Millisecond,
		RedialMax:          time.Second,
		RedialTimeout:      time.Second,
		RevalidateInterval: 30 * time.Second,
	}
}

// Validate checks that the config can run.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("link: NodeID is required")
	case c.GetCertificate == nil && (len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil):
		return errors.New("link: Certificate is required")
	case c.CAs == nil:
		return errors.New("link: CAs is required")
	case c.KeepAlivePeriod <= 0 || c.MaxIdleTimeout <= c.KeepAlivePeriod:
		return errors.New("link: KeepAlivePeriod must be positive and below MaxIdleTimeout")
	case c.HandshakeTimeout <= 0 || c.ReplayWindow <= 0:
		return errors.New("link: HandshakeTimeout and ReplayWindow must be positive")
	case c.MaxIncomingStreams < 1 || c.MaxHops < 1 || c.MaxFrameBytes < 1024:
		return errors.New("link: MaxIncomingStreams and MaxHops must be at least 1, MaxFrameBytes at least 1024")
	case c.RedialMin <= 0 || c.RedialMax < c.RedialMin || c.RedialTimeout <= 0:
		return errors.New("link: RedialMin and RedialTimeout must be positive and RedialMax at least RedialMin")
	case c.PingInterval <= 0 || c.PingMisses < 2:
		return errors.New("link: PingInterval must be positive and PingMisses at least 2")
	}
	return nil
}

// Sentinel errors.
var (
	// ErrClosed is returned once the transport is closed.
	ErrClosed = errors.New("link: transport closed")
	// ErrPeerDown is the cause of the error a Peer returns, at once,
	// while its link is down and a redial is pending.
	ErrPeerDown = errors.New("link: peer link is down")
	// ErrHopLimit is the cause of the error returned for a request that
	// already crossed MaxHops links.
	ErrHopLimit = errors.New("link: hop limit reached")
	// ErrDuplicate is the cause of the error the serving side returns for
	// a request ID it has already run: a replay.
	ErrDuplicate = errors.New("link: duplicate request (replay)")
)

// Stream error codes on the wire.
const (
	codeCanceled quic.StreamErrorCode      = 0x10 // the forwarding side went away
	codeAborted  quic.StreamErrorCode      = 0x11 // the serving side gave up on the stream
	codeShutdown quic.ApplicationErrorCode = 0
)

// Transport is a node's QUIC endpoint: it dials peers and, once Serve is
// called, accepts their links.
type Transport struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	udp     net.PacketConn
	tr      *quic.Transport
	quicCfg *quic.Config
	srvTLS  *tls.Config
	cliTLS  *tls.Config
	met     *linkMetrics
	seen    *replayWindow

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu      sync.Mutex // guards peers, ln, closed
	peers   map[string]*peerState
	served  map[*quic.Conn]struct{} // accepted links, closed at Close
	ln      *quic.EarlyListener
	closed  bool
	serveWG sync.WaitGroup
}

// Listen opens a UDP socket on addr and builds a Transport on it.
func Listen(cfg Config, addr string) (*Transport, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: listen %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("link: listen %s: %w", addr, err)
	}
	t, err := New(cfg, pc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return t, nil
}

// New builds a Transport on pc, which it owns from then on. It can dial
// at once; it accepts links only after Serve.
func New(cfg Config, pc net.PacketConn) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionCache == nil {
		cfg.SessionCache = tls.NewLRUClientSessionCache(1024)
	}
	met, err := newLinkMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg: cfg, log: cfg.Logger, now: cfg.Now, udp: pc,
		tr:     &quic.Transport{Conn: pc},
		met:    met,
		seen:   newReplayWindow(cfg.ReplayWindow),
		peers:  map[string]*peerState{},
		served: map[*quic.Conn]struct{}{},
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.quicCfg = &quic.Config{
		HandshakeIdleTimeout: cfg.HandshakeTimeout,
		MaxIdleTimeout:       cfg.MaxIdleTimeout,
		KeepAlivePeriod:      cfg.KeepAlivePeriod,
		MaxIncomingStreams:   cfg.MaxIncomingStreams,
		Allow0RTT:            true,
		EnableDatagrams:      true, // pings (liveness.go)
	}
	t.srvTLS, t.cliTLS = serverTLS(cfg), clientTLS(cfg)
	t.srvTLS.VerifyConnection = func(cs tls.ConnectionState) error { return t.verifyPeer(cs, "") }
	t.cliTLS.VerifyConnection = func(cs tls.ConnectionState) error { return t.verifyPeer(cs, cs.ServerName) }
	go t.revalidateLoop()
	return t, nil
}

// Addr returns the local UDP address.
func (t *Transport) Addr() net.Addr { return t.udp.LocalAddr() }

// NodeID returns this node's name.
func (t *Transport) NodeID() string { return t.cfg.NodeID }

// Serve starts accepting links and runs every forwarded request through h.
// It returns at once; Close stops it.
func (t *Transport) Serve(h Handler) error {
	if h == nil {
		return errors.New("link: Serve needs a handler")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.ln != nil {
		return errors.New("link: already serving")
	}
	ln, err := t.tr.ListenEarly(t.srvTLS, t.quicCfg)
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	t.ln = ln
	t.serveWG.Add(1)
	go func() {
		defer t.serveWG.Done()
		t.acceptLoop(ln, h)
	}()
	return nil
}

// Close closes every link (peers see a clean shutdown), stops serving and
// releases the socket. In-flight forwarded requests fail.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ln := t.ln
	peers := make([]*peerState, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	served := make([]*quic.Conn, 0, len(t.served))
	for c := range t.served {
		served = append(served, c)
	}
	t.mu.Unlock()
	t.cancel()
	for _, p := range peers {
		p.close()
	}
	// Closing each link explicitly tells peers at once, so they fail
	// over now rather than after their idle timeout.
	for _, c := range served {
		c.CloseWithError(codeShutdown, "shutting down")
	}
	if ln != nil {
		ln.Close()
	}
	err := t.tr.Close()
	t.serveWG.Wait()
	if cerr := t.udp.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

// Kill stops the transport abruptly, as a crash would: the socket
// closes first, so no peer hears a close and each sees only silence;
// then everything is released. It is for tests and benchmarks of
// failure detection.
func (t *Transport) Kill() {
	t.udp.Close()
	t.Close()
}

// Healthy reports whether a link to the named peer is up now. A peer
// whose link died is unhealthy until a redial succeeds; one never dialled
// is unhealthy too.
func (t *Transport) Healthy(nodeID string) bool {
	t.mu.Lock()
	p := t.peers[nodeID]
	t.mu.Unlock()
	return p != nil && p.up()
}

// Down reports whether the link to the named peer died or failed to
// dial, with a redial pending: requests must not wait on it. A peer never
// dialled is not down.
func (t *Transport) Down(nodeID string) bool {
	t.mu.Lock()
	p := t.peers[nodeID]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// RTT is the smoothed ping round trip to the named peer, zero when
// unknown.
func (t *Transport) RTT(nodeID string) time.Duration {
	t.mu.Lock()
	p := t.peers[nodeID]
	t.mu.Unlock()
	if p == nil {
		return 0
	}
	return time.Duration(p.rtt.Load())
}

// LinkState is one peer's link, for status pages and tests.
type LinkState struct {
	Node string `json:"node"`
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
	// Down says the link died and a redial is pending; requests fail
	// over at once meanwhile.
	Down bool `json:"down"`
	// RTTMs is the link's smoothed ping RTT, in milliseconds; zero until
	// measured.
	RTTMs float64 `json:"rtt_ms"`
}

// Links lists the peers this transport dials.
func (t *Transport) Links() []LinkState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]LinkState, 0, len(t.peers))
	for _, p := range t.peers {
		p.mu.Lock()
		out = append(out, LinkState{Node: p.node, Addr: p.addr, Up: p.conn != nil && p.conn.Context().Err() == nil, Down: p.down,
			RTTMs: float64(p.rtt.Load()) / 1e6})
		p.mu.Unlock()
	}
	return out
}
