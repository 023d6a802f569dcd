package gossip

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// rttAlpha is the EWMA weight of a new RTT sample.
const rttAlpha = 0.2

// Member states, as reported in Member.State. There is no "suspect"
// state: memberlist raises no event when it suspects a node and its
// member list cannot be read without racing, so a node memberlist
// suspects shows as alive until it is declared dead (see
// DetectionBound). Member.Suspect is this package's own, faster signal:
// another edge's link declared the node dead (Node.Suspect).
const (
	StateAlive = "alive"
	StateDead  = "dead"
	StateLeft  = "left"
)

// Load is a node's load: the coarse class travels in NodeMeta, the figures
// as "load/<node>" broadcasts.
type Load struct {
	// Class is the coarse load level, 0 (idle) to 255 (saturated).
	Class uint8 `json:"class"`
	// QueueDepth is the number of requests waiting for a slot.
	QueueDepth int `json:"queue_depth"`
	// InFlight is the number of requests being served.
	InFlight int `json:"in_flight"`
	// LatencyEWMAMs is the smoothed request latency, in milliseconds.
	LatencyEWMAMs float64 `json:"latency_ewma_ms"`
}

// Member is one node as this node sees it. Members returns copies.
type Member struct {
	ID       string `json:"id"`
	Region   string `json:"region"`
	Addr     string `json:"addr"`      // gossip host:port
	QUICAddr string `json:"quic_addr"` // link host:port
	// State is alive, dead or left.
	State string `json:"state"`
	// RTT is the smoothed probe round trip, zero if never measured.
	RTT           time.Duration `json:"rtt_ns"`
	Load          Load          `json:"load"`
	ReadyModels   []string      `json:"ready_models"`
	ModelsDigest  uint64        `json:"models_digest"`
	TableRevision uint64        `json:"table_revision"`
	Draining      bool          `json:"draining"`
	// ModelsStale is set while the node's ready-model record disagrees
	// with the ModelsDigest in its memberlist meta: a models broadcast
	// was lost, or the meta has not arrived yet. ReadyModels is then
	// empty (no route may trust it) until a targeted push-pull repairs
	// the record, for at most staleTrustAfter.
	ModelsStale bool `json:"models_stale,omitempty"`
	// Suspect is set while a suspicion from another edge stands: the
	// node has not refuted it (by a record newer than the suspicion),
	// memberlist has not seen it come back, and SuspicionTimeout has not
	// passed.
	Suspect bool `json:"suspect,omitempty"`
}

// record is the rich per-node state carried by broadcasts and push-pull.
// Models and load have separate versions because they are broadcast
// separately and may arrive out of order. Versions come from the owner's
// versionClock, so they only grow, across restarts too.
type record struct {
	Node      string   `json:"n"`
	ModelsVer uint64   `json:"mv,omitempty"`
	Models    []string `json:"m,omitempty"`
	LoadVer   uint64   `json:"lv,omitempty"`
	Load      Load     `json:"l"`
}

// Wire formats. A broadcast is one type byte then JSON; push-pull state is
// one version byte then a JSON array of records.
const (
	msgModels     byte = 1
	msgLoad       byte = 2
	msgSuspect    byte = 3 // a suspicion; body suspicion
	stateVersion1 byte = 1
)

func encodeRecordMsg(t byte, r record) []byte {
	b, err := json.Marshal(r)
	if err != nil { // cannot happen for this type
		panic(err)
	}
	return append([]byte{t}, b...)
}

func decodeRecordMsg(b []byte) (byte, record, error) {
	var r record
	if len(b) < 2 || (b[0] != msgModels && b[0] != msgLoad) {
		return 0, r, fmt.Errorf("%w: bad broadcast", ErrBadMessage)
	}
	if err := json.Unmarshal(b[1:], &r); err != nil || r.Node == "" || len(r.Node) > MaxNodeIDLen {
		return 0, r, fmt.Errorf("%w: bad broadcast body", ErrBadMessage)
	}
	return b[0], r, nil
}

// peer is one row of the peer table.
type peer struct {
	addr    string
	state   string // "" until memberlist has told us about the node
	meta    NodeMeta
	rec     record
	rtt     time.Duration
	hasRTT  bool
	downs   int // times the state left alive
	samples int // RTT samples taken
	// suspectAt is the newest standing suspicion's time (suspecter's
	// clock, unix ns), 0 when none; it stands until suspectUntil (local
	// clock) unless a record of the node newer than suspectVer refutes
	// it. Versions are the node's own, so no two clocks are compared.
	suspectAt    int64
	suspectVer   uint64
	suspectBy    string
	suspectUntil time.Time
	// recDigest is ModelsDigest(rec.Models). staleSince is when the
	// record was first seen to disagree with meta.ModelsDigest (zero
	// while they agree); repairAt is when the next targeted push-pull
	// for it may start.
	recDigest  uint64
	staleSince time.Time
	repairAt   time.Time
}

// Repair of lost models broadcasts. A node's memberlist meta carries the
// digest of its ready models, and memberlist spreads meta on its own
// (alive messages and its push-pull), apart from this package's
// broadcasts. A record that disagrees with the digest for repairAfter is
// stale: the node push-pulls with its owner at once, instead of waiting
// for a random push-pull round (PushPullInterval, 15 s to 30 s), and at
// most every repairEvery. Meanwhile Members reports no ready models for
// it: routing to a model a node has unloaded costs a failed attempt,
// while not routing to one it has just loaded costs nothing but a
// farther target. After staleTrustAfter the record is believed again,
// because the meta itself may be the stale side (a dropped update event)
// and a member must not lose its models for good.
const (
	repairAfter     = time.Second
	repairEvery     = 5 * time.Second
	staleTrustAfter = 30 * time.Second
)

// modelsStale reports whether p's record disagrees with its meta's digest
// and is not yet past staleTrustAfter. A node with no meta yet is not
// judged.
func (p *peer) modelsStale(now time.Time) bool {
	if p.meta.NodeID == "" || p.recDigest == p.meta.ModelsDigest {
		return false
	}
	return p.staleSince.IsZero() || now.Sub(p.staleSince) < staleTrustAfter
}

// suspicion says node By's link declared node N dead at At (By's clock,
// unix ns), when the newest record By had of N was version Ver: any
// newer record from N refutes it.
type suspicion struct {
	Node string `json:"n"`
	By   string `json:"by"`
	At   int64  `json:"at"`
	Ver  uint64 `json:"v"`
}

func encodeSuspicion(s suspicion) []byte {
	b, err := json.Marshal(s)
	if err != nil { // cannot happen for this type
		panic(err)
	}
	return append([]byte{msgSuspect}, b...)
}

func decodeSuspicion(b []byte) (suspicion, error) {
	var s suspicion
	if len(b) < 2 || b[0] != msgSuspect {
		return s, fmt.Errorf("%w: bad suspicion", ErrBadMessage)
	}
	if err := json.Unmarshal(b[1:], &s); err != nil || s.Node == "" || len(s.Node) > MaxNodeIDLen || len(s.By) > MaxNodeIDLen || s.At <= 0 {
		return s, fmt.Errorf("%w: bad suspicion body", ErrBadMessage)
	}
	return s, nil
}

// suspect records s until until, unless a record this node holds
// already refutes it. It reports whether s is news (to re-gossip).
func (t *table) suspect(s suspicion, until time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.getLocked(s.Node)
	if s.At <= p.suspectAt || max(p.rec.ModelsVer, p.rec.LoadVer) > s.Ver {
		return false
	}
	p.suspectAt, p.suspectVer, p.suspectBy, p.suspectUntil = s.At, s.Ver, s.By, until
	return true
}

// version is the newest record version held for id, 0 when none.
func (t *table) version(id string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		return max(p.rec.ModelsVer, p.rec.LoadVer)
	}
	return 0
}

// ownModels is this node's own ready models, for a refutation.
func (t *table) ownModels(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		return slices.Clone(p.rec.Models)
	}
	return nil
}

// table is the peer table. Its lock is a leaf: nothing is called while it
// is held, so memberlist delegates may take it.
type table struct {
	mu    sync.Mutex
	peers map[string]*peer
}

func newTable() *table { return &table{peers: make(map[string]*peer)} }

// getLocked returns the row for id, creating it.
func (t *table) getLocked(id string) *peer {
	p, ok := t.peers[id]
	if !ok {
		p = &peer{recDigest: emptyDigest}
		t.peers[id] = p
	}
	return p
}

// setNode records memberlist's view of a node. A nil meta keeps the old one.
func (t *table) setNode(id, addr, state string, meta []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.getLocked(id)
	if addr != "" {
		p.addr = addr
	}
	if p.state == StateAlive && state != StateAlive {
		p.downs++
	}
	if p.state != "" && p.state != StateAlive && state == StateAlive {
		p.suspectAt = 0 // back: memberlist saw it rejoin
	}
	p.state = state
	if meta != nil {
		if m, err := DecodeMeta(meta); err == nil {
			p.meta = m
		}
	}
}

// merge applies r where it is newer, returning which parts changed.
func (t *table) merge(r record) (models, load bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.getLocked(r.Node)
	if r.ModelsVer > p.rec.ModelsVer {
		p.rec.ModelsVer, p.rec.Models = r.ModelsVer, slices.Clone(r.Models)
		p.recDigest = ModelsDigest(p.rec.Models)
		models = true
	}
	if r.LoadVer > p.rec.LoadVer {
		p.rec.LoadVer, p.rec.Load = r.LoadVer, r.Load
		load = true
	}
	if p.suspectAt != 0 && max(r.ModelsVer, r.LoadVer) > p.suspectVer {
		p.suspectAt = 0 // refuted: the node spoke after it was suspected
	}
	p.rec.Node = r.Node
	return models, load
}

func (t *table) observeRTT(id string, rtt time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.getLocked(id)
	p.samples++
	if !p.hasRTT {
		p.rtt, p.hasRTT = rtt, true
		return
	}
	p.rtt = time.Duration(rttAlpha*float64(rtt) + (1-rttAlpha)*float64(p.rtt))
}

func (t *table) rtt(id string) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok || !p.hasRTT {
		return 0, false
	}
	return p.rtt, true
}

func (t *table) samples(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		return p.samples
	}
	return 0
}

func (t *table) downs(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		return p.downs
	}
	return 0
}

// snapshot returns every record, for push-pull.
func (t *table) snapshot() []record {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record, 0, len(t.peers))
	for id, p := range t.peers {
		if p.rec.ModelsVer == 0 && p.rec.LoadVer == 0 {
			continue
		}
		r := p.rec
		r.Node = id
		out = append(out, r)
	}
	return out
}

// members returns copies of every node memberlist has reported, sorted by ID.
func (t *table) members() []Member {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Member, 0, len(t.peers))
	for id, p := range t.peers {
		if p.state == "" {
			continue
		}
		l := p.rec.Load
		l.Class = p.meta.LoadClass
		stale := p.modelsStale(now)
		ready := slices.Clone(p.rec.Models)
		if stale {
			ready = nil
		}
		out = append(out, Member{
			ID:            id,
			Region:        p.meta.Region,
			Addr:          p.addr,
			QUICAddr:      p.meta.QUICAddr,
			State:         p.state,
			RTT:           p.rtt,
			Load:          l,
			ReadyModels:   ready,
			ModelsStale:   stale,
			ModelsDigest:  p.meta.ModelsDigest,
			TableRevision: p.meta.TableRevision,
			Draining:      p.meta.Draining,
			Suspect:       p.suspectAt != 0 && now.Before(p.suspectUntil) && p.state == StateAlive,
		})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// staleRecords returns the gossip addresses of alive peers (not self)
// whose models record has disagreed with their meta for repairAfter and
// whose last repair was at least repairEvery ago, and marks them
// repaired now.
func (t *table) staleRecords(self string, now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var addrs []string
	for id, p := range t.peers {
		if id == self || p.state != StateAlive || p.meta.NodeID == "" || p.recDigest == p.meta.ModelsDigest {
			p.staleSince = time.Time{}
			continue
		}
		if p.staleSince.IsZero() {
			p.staleSince = now
		}
		if now.Sub(p.staleSince) >= repairAfter && !now.Before(p.repairAt) && p.addr != "" {
			p.repairAt = now.Add(repairEvery)
			addrs = append(addrs, p.addr)
		}
	}
	sort.Strings(addrs)
	return addrs
}

// aliveCount is the broadcast queue's estimate of the cluster size.
func (t *table) aliveCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.peers {
		if p.state == StateAlive {
			n++
		}
	}
	return max(n, 1)
}

// namedBroadcast is a broadcast that a newer one of the same name replaces
// in the queue ("models/<node>", "load/<node>").
type namedBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}
func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}

func broadcastName(t byte, node string) string {
	if t == msgModels {
		return "models/" + node
	}
	return "load/" + node
}

func encodeState(recs []record) []byte {
	b, err := json.Marshal(recs)
	if err != nil {
		panic(err)
	}
	return append([]byte{stateVersion1}, b...)
}

func decodeState(b []byte) ([]record, error) {
	if len(b) < 1 || b[0] != stateVersion1 {
		return nil, fmt.Errorf("%w: bad push-pull state", ErrBadMessage)
	}
	var recs []record
	if err := json.Unmarshal(b[1:], &recs); err != nil {
		return nil, fmt.Errorf("%w: push-pull state: %v", ErrBadMessage, err)
	}
	return recs, nil
}
