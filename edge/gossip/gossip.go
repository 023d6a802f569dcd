// Package gossip is the edge's fleet-wide membership view, built on
// hashicorp/memberlist: who is up, where, how loaded, with which models
// ready, and how far away (probe RTT).
//
// Gossip is slow (seconds to detect a failure) and must never decide a
// single request: per-request decisions belong to the link layer. This
// package must never block inside a memberlist delegate nor call
// Members() from one (it deadlocks).
//
// Lock ordering: Node.updMu, then Node.mu, then table.mu (a leaf). Only
// updMu is held while calling into memberlist (UpdateNode); memberlist
// calls NodeMeta, which takes Node.mu, from inside UpdateNode, so Node.mu
// is never held across a memberlist call.
package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meridian-mesh/meridian/shared/backoff"
)

// Sentinel errors.
var (
	// ErrInvalidConfig wraps every Config.Validate failure.
	ErrInvalidConfig = errors.New("gossip: invalid config")
	// ErrMetaTooLarge means a NodeMeta field exceeds its limit.
	ErrMetaTooLarge = errors.New("gossip: node meta too large")
	// ErrBadMeta means bytes are not a valid encoded NodeMeta.
	ErrBadMeta = errors.New("gossip: bad node meta")
	// ErrBadMessage means a broadcast or push-pull payload is malformed.
	ErrBadMessage = errors.New("gossip: bad message")
	// ErrClosed is returned by operations on a closed Node.
	ErrClosed = errors.New("gossip: node closed")
	// ErrNoSeeds is returned by Join when there is nobody to join.
	ErrNoSeeds = errors.New("gossip: no seeds")
)

// Stats are counters for metrics and benchmarks.
type Stats struct {
	// BytesSent is every gossip byte this node wrote, UDP and TCP, after
	// encryption (label headers excluded).
	BytesSent uint64
	// PacketBytesSent is the UDP part of BytesSent (probes, gossip).
	PacketBytesSent uint64
	// StreamBytesSent is the TCP part of BytesSent (push-pull, joins).
	StreamBytesSent uint64
	// EventsDropped counts memberlist events dropped because the event
	// channel was full.
	EventsDropped uint64
	// Repairs counts targeted push-pulls with a node whose models record
	// disagreed with its meta (a lost broadcast).
	Repairs uint64
	// Alive is how many members, this node included, it sees alive.
	Alive int
}

// Node is one member of the gossip mesh.
type Node struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring
	tr      *transport
	mlog    *levelWriter // memberlist's log, told when the node closes
	queue   *memberlist.TransmitLimitedQueue
	tab     *table
	addr    string // advertised host:port

	events  chan event
	dropped atomic.Uint64
	// repairs counts targeted push-pulls; repairing is set while one runs.
	repairs   atomic.Uint64
	repairing atomic.Bool
	changed   chan struct{} // a suspicion came or went; capacity 1
	refuted   atomic.Int64  // time of the newest suspicion of this node refuted
	pubMu     sync.Mutex    // serialises publish

	mu      sync.Mutex // guards meta, lastVer
	updMu   sync.Mutex // serializes UpdateNode calls with Close
	meta    NodeMeta
	lastVer uint64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool
}

type event struct {
	id, addr, state string
	meta            []byte
}

// New starts a gossip node bound as cfg says. It does not join anyone:
// call Join. A nil logger means slog.Default().
func New(cfg Config, logger *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "gossip", "node", cfg.NodeID)
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	lw := &levelWriter{log: logger}
	mlog := log.New(lw, "", 0)

	keyring, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}

	// Bind first, so with BindPort 0 we know the port before advertising it.
	var base memberlist.Transport
	advertise := cfg.AdvertiseAddr
	if cfg.Transport != nil {
		ip, port, err := cfg.Transport.FinalAdvertiseAddr(cfg.AdvertiseAddr, cfg.AdvertisePort)
		if err != nil {
			return nil, fmt.Errorf("gossip: transport address: %w", err)
		}
		base, advertise = cfg.Transport, ip.String()
		mc.AdvertiseAddr, mc.AdvertisePort = advertise, port
	} else {
		var nt *memberlist.NetTransport
		for range 10 { // port 0 binds TCP then UDP on the same port, which can race
			nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
				BindAddrs: []string{cfg.BindAddr}, BindPort: cfg.BindPort, Logger: mlog,
			})
			if err == nil || cfg.BindPort != 0 {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("gossip: bind %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
		}
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = nt.GetAutoBindPort()
		}
		mc.BindPort = nt.GetAutoBindPort()
		base = nt
	}

	n := &Node{
		cfg:     cfg,
		log:     logger,
		keyring: keyring,
		tr:      newTransport(base),
		mlog:    lw,
		tab:     newTable(),
		addr:    net.JoinHostPort(advertise, strconv.Itoa(mc.AdvertisePort)),
		events:  make(chan event, cfg.EventBuffer),
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		meta:    NodeMeta{NodeID: cfg.NodeID, Region: cfg.Region, QUICAddr: cfg.QUICAddr, ModelsDigest: ModelsDigest(nil)},
	}
	n.queue = &memberlist.TransmitLimitedQueue{NumNodes: n.tab.aliveCount, RetransmitMult: mc.RetransmitMult}
	if _, err := n.meta.Encode(); err != nil {
		n.tr.Shutdown()
		return nil, err
	}

	mc.Transport = n.tr
	mc.Keyring = keyring
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.Logger = mlog
	mc.Delegate = (*delegate)(n)
	mc.Events = (*eventDelegate)(n)
	mc.Ping = (*pingDelegate)(n)

	ml, err := memberlist.Create(mc)
	if err != nil {
		n.tr.Shutdown()
		return nil, fmt.Errorf("gossip: create memberlist: %w", err)
	}
	n.ml = ml

	refresh := cfg.RefreshInterval
	if refresh == 0 {
		refresh = mc.ProbeInterval
	}
	n.wg.Add(1)
	go n.eventLoop(refresh)
	if cfg.RejoinInterval > 0 {
		n.wg.Add(1)
		go n.rejoinLoop()
	}
	return n, nil
}

// Addr is the advertised gossip address, host:port, for others' Seeds.
func (n *Node) Addr() string { return n.addr }

// ID is the node ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Join contacts addrs (cfg.Seeds if none) and returns how many answered.
// Seeds that are this node are skipped. Failing to join is not fatal: the
// rejoin loop keeps trying.
func (n *Node) Join(addrs ...string) (int, error) {
	if n.closed.Load() {
		return 0, ErrClosed
	}
	if len(addrs) == 0 {
		addrs = n.cfg.Seeds
	}
	addrs = slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == n.addr })
	if len(addrs) == 0 {
		return 0, ErrNoSeeds
	}
	k, err := n.ml.Join(addrs)
	if err != nil {
		return k, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return k, nil
}

// Members returns a copy of every known node, this one included, sorted by
// ID. Dead and left nodes stay listed until memberlist forgets them.
func (n *Node) Members() []Member { return n.tab.members() }

// RTT is the smoothed (EWMA, alpha 0.2) probe round trip to peerID.
func (n *Node) RTT(peerID string) (time.Duration, bool) { return n.tab.rtt(peerID) }

// Suspect tells the fleet that this node's link declared node dead, so
// the others stop sending to it before their own links notice: every
// member that hears it shows node as Suspect until node refutes it (an
// alive node does so at once, by re-publishing its records), memberlist
// sees it come back, or SuspicionTimeout passes. This node's own view is
// unchanged: its link is its evidence. It never blocks.
func (n *Node) Suspect(node string) {
	if node == "" || node == n.cfg.NodeID || len(node) > MaxNodeIDLen || n.closed.Load() {
		return
	}
	s := suspicion{Node: node, By: n.cfg.NodeID, At: time.Now().UnixNano(), Ver: n.tab.version(node)}
	n.queue.QueueBroadcast(&namedBroadcast{name: "suspect/" + node, msg: encodeSuspicion(s)})
}

// Changed is signalled (without blocking, coalesced) when a member's
// Suspect flag may have changed, so a follower of Members need not wait
// for its next poll.
func (n *Node) Changed() <-chan struct{} { return n.changed }

func (n *Node) signal() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// suspected handles a suspicion heard through gossip.
func (n *Node) suspected(b []byte) {
	s, err := decodeSuspicion(b)
	if err != nil {
		n.log.Debug("dropping suspicion", "err", err)
		return
	}
	if s.Node == n.cfg.NodeID {
		// Refute: a record newer than the suspected version clears it
		// everywhere. Once per suspicion.
		if old := n.refuted.Load(); s.At > old && n.refuted.CompareAndSwap(old, s.At) {
			n.log.Info("refuting a suspicion", "by", s.By)
			// The models are read inside publish, which runs one at a
			// time: read before it, they could be a set SetReadyModels
			// replaced meanwhile, republished as the newer one.
			n.publish(msgModels, func(r *record) {
				r.ModelsVer, r.Models = max(n.nextVersion(), s.Ver+1), n.tab.ownModels(n.cfg.NodeID)
			})
		}
		return
	}
	if s.By == n.cfg.NodeID {
		return // our own suspicion, echoed back: our link is our evidence
	}
	timeout := n.cfg.SuspicionTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if n.tab.suspect(s, time.Now().Add(timeout)) {
		n.log.Info("peer suspected", "peer", s.Node, "by", s.By)
		n.queue.QueueBroadcast(&namedBroadcast{name: "suspect/" + s.Node, msg: bytes.Clone(b)})
		n.signal()
	}
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	p, s := n.tr.packetSent.Load(), n.tr.streamSent.Load()
	return Stats{BytesSent: p + s, PacketBytesSent: p, StreamBytesSent: s, EventsDropped: n.dropped.Load(), Repairs: n.repairs.Load(),
		Alive: n.tab.aliveCount()}
}

// HandleMembers serves GET /v1/meridian/members as {"members":[...]}.
func (n *Node) HandleMembers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Members []Member `json:"members"`
	}{n.Members()})
}

// InstallKey adds key to the local keyring; it is accepted for decryption
// at once. Rotation: InstallKey on every node, then UseKey on every node,
// then RemoveKey of the old key on every node.
func (n *Node) InstallKey(key []byte) error { return n.keyring.AddKey(key) }

// UseKey makes an installed key the primary (encrypting) key.
func (n *Node) UseKey(key []byte) error { return n.keyring.UseKey(key) }

// RemoveKey drops a key that is not the primary.
func (n *Node) RemoveKey(key []byte) error { return n.keyring.RemoveKey(key) }

// SetMeta changes the region and QUIC address this node advertises.
func (n *Node) SetMeta(region, quicAddr string) error {
	return n.updateMeta(func(m *NodeMeta) { m.Region, m.QUICAddr = region, quicAddr })
}

// SetTableRevision advertises the routing-table revision this node applied.
func (n *Node) SetTableRevision(rev uint64) error {
	return n.updateMeta(func(m *NodeMeta) { m.TableRevision = rev })
}

// SetDraining advertises whether this node is draining.
func (n *Node) SetDraining(draining bool) error {
	return n.updateMeta(func(m *NodeMeta) { m.Draining = draining })
}

// SetReadyModels broadcasts the models ready on this node and advertises
// their digest. The list must fit one gossip packet (about 1 KB); a longer
// one still spreads, by push-pull only.
func (n *Node) SetReadyModels(models []string) error {
	models = slices.Clone(models)
	slices.Sort(models)
	models = slices.Compact(models)
	n.publish(msgModels, func(r *record) { r.ModelsVer, r.Models = n.nextVersion(), models })
	return n.updateMeta(func(m *NodeMeta) { m.ModelsDigest = ModelsDigest(models) })
}

// ReadyModels returns the ready models of this node's own record, as the
// fleet is told them.
func (n *Node) ReadyModels() []string { return n.tab.ownModels(n.cfg.NodeID) }

// SetLoad broadcasts the load figures; a change of l.Class also updates
// NodeMeta.
func (n *Node) SetLoad(l Load) error {
	n.publish(msgLoad, func(r *record) { r.LoadVer, r.Load = n.nextVersion(), l })
	n.mu.Lock()
	same := n.meta.LoadClass == l.Class
	n.mu.Unlock()
	if same {
		return nil
	}
	return n.updateMeta(func(m *NodeMeta) { m.LoadClass = l.Class })
}

// Close leaves gracefully: it advertises draining, broadcasts a leave and
// shuts memberlist down. It is idempotent.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		// After this no setter can queue an alive update behind the leave.
		n.updMu.Lock()
		n.closed.Store(true)
		n.updMu.Unlock()
		n.mlog.closing.Store(true)
		_ = n.setLocalMeta(func(m *NodeMeta) { m.Draining, m.Leaving = true, true })
		if e := n.ml.UpdateNode(n.cfg.UpdateTimeout); e != nil {
			n.log.Debug("draining update not finished spreading", "err", e)
		}
		if e := n.ml.Leave(n.cfg.LeaveTimeout); e != nil {
			n.log.Warn("leave not confirmed", "err", e)
		}
		err = n.ml.Shutdown()
		close(n.stop)
		n.wg.Wait()
	})
	return err
}

// Kill stops the node abruptly, without leaving, as a crash would. It is
// for tests and benchmarks of failure detection.
func (n *Node) Kill() error {
	var err error
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		n.mlog.closing.Store(true)
		err = n.ml.Shutdown()
		close(n.stop)
		n.wg.Wait()
	})
	return err
}

// nextVersion is a monotonic version for this node's records. It starts
// at wall-clock nanoseconds so a restarted node's data is newer than what
// peers remember of its previous life.
func (n *Node) nextVersion() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lastVer = max(n.lastVer+1, uint64(time.Now().UnixNano()))
	return n.lastVer
}

// publish updates this node's record and queues its broadcast. Calls
// run one at a time, so versions are handed out, merged and queued in
// the same order, and set may read the node's own record.
func (n *Node) publish(t byte, set func(*record)) {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	r := record{Node: n.cfg.NodeID}
	set(&r)
	n.tab.merge(r)
	n.queue.QueueBroadcast(&namedBroadcast{name: broadcastName(t, r.Node), msg: encodeRecordMsg(t, r)})
}

// updateMeta changes the local NodeMeta and queues it with UpdateNode.
//
// Setters do not wait: UpdateNode queues the alive broadcast before it
// waits, and its wait ends only when that broadcast is Finished, i.e. has
// been retransmitted RetransmitMult*ceil(log10(n+1)) times, which takes
// about a second at n=100 and says nothing about who has it. A 1 ns
// timeout (0 would mean forever) makes it return at once; its only error
// is that timeout.
func (n *Node) updateMeta(f func(*NodeMeta)) error {
	n.updMu.Lock()
	defer n.updMu.Unlock()
	if n.closed.Load() {
		return ErrClosed
	}
	if err := n.setLocalMeta(f); err != nil {
		return err
	}
	_ = n.ml.UpdateNode(time.Nanosecond)
	return nil
}

func (n *Node) setLocalMeta(f func(*NodeMeta)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.meta
	f(&m)
	if _, err := m.Encode(); err != nil {
		return err
	}
	n.meta = m
	return nil
}

// eventLoop applies memberlist events to the table and, every refresh,
// re-reads memberlist's member list to repair dropped events.
func (n *Node) eventLoop(refresh time.Duration) {
	defer n.wg.Done()
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case e := <-n.events:
			n.tab.setNode(e.id, e.addr, e.state, e.meta)
		case <-t.C:
			n.refresh()
		}
	}
}

// refresh repairs the table from memberlist's member list. Only names are
// read: memberlist mutates the other fields of the returned nodes in place
// under its own lock, so reading them here would race. Meta is repaired by
// the next update event.
func (n *Node) refresh() {
	seen := make(map[string]bool)
	for _, m := range n.ml.Members() {
		seen[m.Name] = true
	}
	n.tab.mu.Lock()
	var gone, left, back []string
	for id, p := range n.tab.peers {
		switch {
		case seen[id] || p.state != StateAlive:
		case p.meta.Leaving:
			left = append(left, id)
		default:
			gone = append(gone, id)
		}
	}
	for id := range seen {
		if p, ok := n.tab.peers[id]; !ok || p.state != StateAlive {
			back = append(back, id)
		}
	}
	n.tab.mu.Unlock()
	for _, id := range gone {
		n.tab.setNode(id, "", StateDead, nil)
	}
	for _, id := range left {
		n.tab.setNode(id, "", StateLeft, nil)
	}
	for _, id := range back {
		n.tab.setNode(id, "", StateAlive, nil)
	}
	if addrs := n.tab.staleRecords(n.cfg.NodeID, time.Now()); len(addrs) > 0 && n.repairing.CompareAndSwap(false, true) {
		n.wg.Add(1)
		go n.repair(addrs)
	}
}

// repair push-pulls with the nodes at addrs, whose models records here
// disagree with their meta: memberlist's Join with a member is one
// full-state exchange with it, which brings its newest record (and meta).
func (n *Node) repair(addrs []string) {
	defer n.wg.Done()
	defer n.repairing.Store(false)
	if n.closed.Load() {
		return
	}
	k, err := n.ml.Join(addrs)
	n.repairs.Add(uint64(k))
	if err != nil && !n.closed.Load() {
		n.log.Debug("models record repair failed", "peers", addrs, "err", err)
	}
}

// rejoinLoop re-joins, every RejoinInterval ±25 %, the seeds this node
// does not see alive. A seed it sees alive is in its pool already, and a
// join is a push-pull of the whole member list: re-joining every seed
// every time made each seed take N/RejoinInterval full-state exchanges
// a second, O(N) work on three nodes and O(N²) bytes in all (at 1,000
// edges, 33 exchanges of about 33 KB a second on each seed). After a
// partition each side sees the other's seeds dead, so the rejoin that
// heals it still happens.
func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	for {
		d := backoff.Spread(n.cfg.RejoinInterval, 0.25)
		t := time.NewTimer(d)
		select {
		case <-n.stop:
			t.Stop()
			return
		case <-t.C:
		}
		seeds := seedsToRejoin(n.cfg.Seeds, n.addr, n.Members())
		if len(seeds) == 0 {
			continue
		}
		if _, err := n.Join(seeds...); err != nil && !errors.Is(err, ErrNoSeeds) && !n.closed.Load() {
			n.log.Debug("rejoin failed", "err", err)
		}
	}
}

// seedsToRejoin returns the seeds that are not the address of an alive
// member (nor self). A seed named by host name rather than IP never
// matches a member's address, so it is always re-joined, as before.
func seedsToRejoin(seeds []string, self string, members []Member) []string {
	var out []string
	for _, s := range seeds {
		if s == self || slices.ContainsFunc(members, func(m Member) bool { return m.State == StateAlive && m.Addr == s }) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// delegate is the memberlist Delegate. It never blocks.
type delegate Node

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	n.mu.Lock()
	m := n.meta
	n.mu.Unlock()
	b, err := m.Encode()
	if err != nil || len(b) > limit { // Validate and updateMeta prevent this
		n.log.Error("node meta does not fit", "len", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	n := (*Node)(d)
	if len(b) > 0 && b[0] == msgSuspect {
		n.suspected(b)
		return
	}
	t, r, err := decodeRecordMsg(b)
	if err != nil {
		n.log.Debug("dropping broadcast", "err", err)
		return
	}
	models, load := n.tab.merge(r)
	// Re-gossip news so it spreads epidemically, not only from its origin.
	if (t == msgModels && models) || (t == msgLoad && load) {
		n.queue.QueueBroadcast(&namedBroadcast{name: broadcastName(t, r.Node), msg: bytes.Clone(b)})
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte { return encodeState(d.tab.snapshot()) }

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	n := (*Node)(d)
	recs, err := decodeState(buf)
	if err != nil {
		n.log.Debug("dropping push-pull state", "err", err)
		return
	}
	for _, r := range recs {
		if r.Node != "" && len(r.Node) <= MaxNodeIDLen {
			n.tab.merge(r)
		}
	}
}

// eventDelegate forwards memberlist events to the event loop without
// blocking; when the channel is full the event is dropped and counted.
type eventDelegate Node

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (d *eventDelegate) send(m *memberlist.Node, state string) {
	e := event{id: m.Name, addr: m.Address(), state: state, meta: slices.Clone(m.Meta)}
	if e.meta == nil {
		e.meta = []byte{}
	}
	select {
	case d.events <- e:
	default:
		d.dropped.Add(1)
	}
}

func (d *eventDelegate) NotifyJoin(m *memberlist.Node)   { d.send(m, StateAlive) }
func (d *eventDelegate) NotifyUpdate(m *memberlist.Node) { d.send(m, StateAlive) }

// NotifyLeave cannot use m.State: memberlist keeps the real state in its
// own nodeState and never sets Node.State. A graceful leaver announced
// itself with the Leaving meta flag.
func (d *eventDelegate) NotifyLeave(m *memberlist.Node) {
	if meta, err := DecodeMeta(m.Meta); err == nil && meta.Leaving {
		d.send(m, StateLeft)
		return
	}
	d.send(m, StateDead)
}

// pingDelegate feeds probe RTTs into the peer table.
type pingDelegate Node

var _ memberlist.PingDelegate = (*pingDelegate)(nil)

func (d *pingDelegate) AckPayload() []byte { return nil }

func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	d.tab.observeRTT(other.Name, rtt)
}

// levelWriter turns memberlist's "[LEVEL] msg" log lines into slog records.
// Once the node is closing, memberlist's goroutines still running meet
// the sockets Close shut; their errors say nothing wrong, so they are
// logged at debug level rather than as errors of an orderly shutdown.
type levelWriter struct {
	log     *slog.Logger
	closing atomic.Bool
}

func (w *levelWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, l := range memberlistLevels {
		if strings.HasPrefix(msg, l.prefix) {
			level, msg = l.level, strings.TrimSpace(msg[len(l.prefix):])
			break
		}
	}
	// A member under churn logs every suspicion and failure: a line at
	// a level the logger drops stops here.
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	if level > slog.LevelDebug && w.closing.Load() && strings.Contains(msg, net.ErrClosed.Error()) {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// memberlistLevels are memberlist's log line prefixes.
var memberlistLevels = []struct {
	prefix string
	level  slog.Level
}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}}
