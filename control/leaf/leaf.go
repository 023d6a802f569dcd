// Package leaf is the table keeper of a regional NATS leaf node
// (`meridian-control leaf`): a NATS server that runs as a leaf node of
// the control plane's servers, which a region's edges connect to instead
// of the control plane, so that a region cut off from the control plane
// still hands its last routing table to its own edges.
//
// The keeper follows the table as an edge does (heartbeats and updates,
// each signature checked) and, whenever it is behind, fetches the control
// plane's signed snapshot reply and keeps it, byte for byte, in memory
// and on disk (fsync and a checksum). It answers snapshot requests only
// while the leaf's connection to the hub is down: while the hub is
// reachable the control nodes answer, so an edge never gets an older
// snapshot from the leaf while the control plane has a newer one. A
// request that reaches the keeper as the hub comes back is forwarded to
// the hub. The snapshot is signed by the control plane, and edges verify
// it and never move back within an epoch, so serving it needs no key.
//
// The keeper is also the leaf server's list of edge identities
// (natsd.Identities): the table names each joined node's NATS key (Node
// nats_key), so an edge connects to its leaf with the credentials it
// uses on the control plane and gets the same subject permissions there.
//
// It must never sign, change or make up a table, and never answer while
// the hub is reachable.
package leaf

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Config configures a keeper.
type Config struct {
	// Name names the leaf in its snapshot requests and logs.
	Name string
	// Keys are the table public keys the control plane signs with (what
	// edges pin: `meridianctl table-key`); a message that verifies
	// under none is ignored.
	Keys []ed25519.PublicKey
	// ClusterID is the control plane's cluster ID; "" follows the
	// cluster of the first table the keeper holds.
	ClusterID string
	// CachePath is the file the last snapshot is kept in.
	CachePath string
	// MaxBytes caps a table, bytes. Default tablewire.DefaultMaxBytes.
	MaxBytes int
	// SnapshotTimeout bounds one snapshot request to the hub. Default 5 s.
	SnapshotTimeout time.Duration
	// Poll is how often the keeper checks the hub connection and
	// whether it is behind. Default 200 ms.
	Poll time.Duration
	// StartGrace is how long after Run starts the keeper waits for the
	// hub connection before it takes the hub for unreachable, so a leaf
	// whose connection is still being set up does not answer. Default 2 s.
	StartGrace time.Duration
	// Retry is the backoff between failed snapshot fetches. Default
	// 250 ms doubling to 10 s.
	Retry backoff.Policy
	// Logger receives logs; Registerer receives metrics (nil: none).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults; Name, Keys and CachePath must still
// be set.
func DefaultConfig() Config {
	return Config{
		MaxBytes: tablewire.DefaultMaxBytes, SnapshotTimeout: 5 * time.Second, Poll: 200 * time.Millisecond, StartGrace: 2 * time.Second,
		Retry: backoff.Policy{Base: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}, Logger: slog.Default(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("leaf: a name is required"))
	}
	if len(c.Keys) == 0 {
		errs = append(errs, errors.New("leaf: a table public key is required (meridianctl table-key prints it)"))
	}
	for _, k := range c.Keys {
		if len(k) != ed25519.PublicKeySize {
			errs = append(errs, errors.New("leaf: a table public key is 32 bytes"))
		}
	}
	if c.CachePath == "" {
		errs = append(errs, errors.New("leaf: a table cache path is required"))
	}
	if c.MaxBytes < 1024 {
		errs = append(errs, errors.New("leaf: max bytes must be at least 1024"))
	}
	if c.SnapshotTimeout <= 0 || c.Poll <= 0 || c.StartGrace < 0 {
		errs = append(errs, errors.New("leaf: snapshot timeout and poll interval must be positive, start grace not negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("leaf: logger is required"))
	}
	return errors.Join(errs...)
}

// held is the snapshot the keeper keeps: the signed reply as received,
// its table, and the edge keys the table admits.
type held struct {
	reply []byte
	table *tablev1.RoutingTable
	keys  map[string]string // NATS public key → node
}

// Status is the keeper's view, for the leaf's status endpoint.
type Status struct {
	// Revision and Epoch of the snapshot held; 0 when none.
	Revision uint64 `json:"revision"`
	Epoch    uint64 `json:"epoch"`
	// ClusterID of the snapshot held.
	ClusterID string `json:"cluster_id,omitempty"`
	// LeaderRevision is the last revision a heartbeat announced.
	LeaderRevision uint64 `json:"leader_revision"`
	// HubConnected says whether the leaf's connection to the hub is up.
	HubConnected bool `json:"hub_connected"`
	// Answering says whether the keeper answers snapshot requests (the
	// hub is unreachable).
	Answering bool `json:"answering"`
	// Served counts snapshot requests answered from the held snapshot;
	// Forwarded those passed on to the hub.
	Served    uint64 `json:"served"`
	Forwarded uint64 `json:"forwarded"`
	// Edges is how many edge NATS keys the held table admits.
	Edges int `json:"edges"`
	// LastError is the last fetch or cache error, "" when none since.
	LastError string `json:"last_error,omitempty"`
}

// Keeper keeps a region's last routing table.
type Keeper struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	cur atomic.Pointer[held]

	// OnIdentities, when set, is called after the admitted edge keys
	// change (the leaf server closes connections of revoked keys).
	OnIdentities func()

	mu         sync.Mutex
	nc         *nats.Conn
	hubUp      func() bool
	sub        *nats.Subscription // snapshot responder while the hub is away
	wantEpoch  uint64
	wantRev    uint64
	want       bool // a heartbeat or update shows a newer table
	lastErr    string
	leaderRev  uint64
	served     atomic.Uint64
	forwarded  atomic.Uint64
	wake       chan struct{}
	nextFetch  time.Time
	fetchTries int
}

// New returns a keeper holding the snapshot in its cache file, if there
// is a good one.
func New(cfg Config) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &Keeper{cfg: cfg, log: cfg.Logger.With("component", "leaf"), wake: make(chan struct{}, 1), want: true}
	k.m = newMetrics(cfg.Registerer, k)
	b, err := tablewire.ReadCache(cfg.CachePath, tablewire.CacheLeafSnapshot, cfg.maxCached())
	switch {
	case err == nil:
		h, err := k.check(b)
		if err != nil {
			k.log.Warn("table cache not used", "path", cfg.CachePath, "err", err)
			k.lastErr = err.Error()
			break
		}
		k.cur.Store(h)
		k.log.Info("serving the table on disk until the hub answers", "revision", h.table.GetRevision(), "epoch", h.table.GetEpoch())
	case errors.Is(err, fs.ErrNotExist):
	default:
		k.log.Warn("table cache not used", "path", cfg.CachePath, "err", err)
	}
	return k, nil
}

// maxCached bounds the payload of the cache file, in bytes: a signed
// reply is a table of at most MaxBytes, a few bytes of reply around it
// and the signature (check bounds it exactly).
func (c Config) maxCached() int { return c.MaxBytes + 1024 }

// check verifies a signed snapshot reply and decodes it.
func (k *Keeper) check(b []byte) (*held, error) {
	if len(b) > k.cfg.MaxBytes+64+tablewire.SignatureOverhead {
		return nil, fmt.Errorf("%w: snapshot of %d bytes", tablewire.ErrTooLarge, len(b))
	}
	if err := tablewire.Verify(k.cfg.Keys, tablewire.ContextSnapshot, tablewire.SignatureField, b); err != nil {
		r := &tablev1.SnapshotReply{}
		if proto.Unmarshal(b, r) == nil && r.GetTable() == nil && r.GetError() != "" {
			return nil, fmt.Errorf("control node has no table: %s", r.GetError())
		}
		return nil, err
	}
	r := &tablev1.SnapshotReply{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: %v", tablewire.ErrDecode, err)
	}
	t := r.GetTable()
	if t == nil {
		return nil, fmt.Errorf("control node has no table: %s", r.GetError())
	}
	if err := k.checkCluster(t.GetClusterId()); err != nil {
		return nil, err
	}
	if err := tablewire.Validate(t); err != nil {
		return nil, err
	}
	h := &held{reply: bytes.Clone(b), table: t, keys: map[string]string{}}
	for _, n := range t.GetEntities().GetNodes() {
		if n.GetNatsKey() != "" && !n.GetRevoked() {
			h.keys[n.GetNatsKey()] = n.GetId()
		}
	}
	return h, nil
}

func (k *Keeper) checkCluster(id string) error {
	want := k.cfg.ClusterID
	if h := k.cur.Load(); want == "" && h != nil {
		want = h.table.GetClusterId()
	}
	if want != "" && id != want {
		return fmt.Errorf("table of cluster %q; this leaf follows cluster %q", id, want)
	}
	return nil
}

// EdgeByKey admits the edges the held table lists with a NATS key and
// does not mark revoked (natsd.Identities).
func (k *Keeper) EdgeByKey(pub string) (string, bool) {
	h := k.cur.Load()
	if h == nil {
		return "", false
	}
	node, ok := h.keys[pub]
	return node, ok
}

// Table returns the table held, or nil.
func (k *Keeper) Table() *tablev1.RoutingTable {
	if h := k.cur.Load(); h != nil {
		return h.table
	}
	return nil
}

// Status returns the keeper's view.
func (k *Keeper) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := Status{LeaderRevision: k.leaderRev, Answering: k.sub != nil, LastError: k.lastErr,
		Served: k.served.Load(), Forwarded: k.forwarded.Load()}
	if k.hubUp != nil {
		st.HubConnected = k.hubUp()
	}
	if h := k.cur.Load(); h != nil {
		st.Revision, st.Epoch, st.ClusterID, st.Edges = h.table.GetRevision(), h.table.GetEpoch(), h.table.GetClusterId(), len(h.keys)
	}
	return st
}

// Run follows the table over nc, a connection to the leaf's own server,
// until ctx ends. hubUp reports whether the leaf's connection to the hub
// is up.
func (k *Keeper) Run(ctx context.Context, nc *nats.Conn, hubUp func() bool) error {
	k.mu.Lock()
	k.nc, k.hubUp = nc, hubUp
	k.mu.Unlock()
	for _, s := range []string{tablewire.SubjectHeartbeat, tablewire.SubjectUpdate} {
		sub, err := nc.Subscribe(s, k.handle)
		if err != nil {
			return fmt.Errorf("leaf: subscribe %s: %w", s, err)
		}
		defer sub.Unsubscribe()
	}
	defer k.setAnswering(false)
	t := time.NewTicker(k.cfg.Poll)
	defer t.Stop()
	started := time.Now()
	for {
		k.step(time.Since(started) >= k.cfg.StartGrace)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.wake:
		}
	}
}

// step answers or stops answering as the hub comes and goes, and fetches
// the newest snapshot while the hub is there and the keeper is behind.
func (k *Keeper) step(pastGrace bool) {
	up := k.hubUp()
	if !up && !pastGrace {
		return
	}
	k.setAnswering(!up)
	if !up {
		return
	}
	k.mu.Lock()
	due := k.want && !time.Now().Before(k.nextFetch)
	k.mu.Unlock()
	if due {
		k.fetch()
	}
}

// setAnswering subscribes the snapshot responder (in the control nodes'
// queue group) or removes it; removal is flushed, so once it returns the
// leaf server routes requests to the hub.
func (k *Keeper) setAnswering(on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case on && k.sub == nil && k.nc != nil:
		sub, err := k.nc.QueueSubscribe(tablewire.SubjectSnapshot, tablewire.SnapshotQueue, k.serve)
		if err != nil {
			k.log.Error("cannot answer snapshot requests", "err", err)
			return
		}
		k.sub = sub
		rev := uint64(0)
		if h := k.cur.Load(); h != nil {
			rev = h.table.GetRevision()
		}
		k.log.Warn("hub unreachable: answering the region's snapshot requests from the last table", "revision", rev)
	case !on && k.sub != nil:
		k.sub.Unsubscribe()
		k.sub = nil
		k.nc.FlushTimeout(time.Second)
		k.log.Info("hub reachable: the control plane answers snapshot requests again")
	}
}

// serve answers a snapshot request with the held snapshot, or forwards
// it to the hub when the hub came back since the responder subscribed.
func (k *Keeper) serve(m *nats.Msg) {
	if m.Reply == "" || len(m.Data) > 64<<10 {
		return
	}
	if k.hubUp() {
		k.setAnswering(false)
		r, err := k.nc.Request(tablewire.SubjectSnapshot, m.Data, k.cfg.SnapshotTimeout)
		if err == nil {
			m.Respond(r.Data)
			k.forwarded.Add(1)
			k.m.requests.WithLabelValues("forwarded").Inc()
		}
		return
	}
	h := k.cur.Load()
	if h == nil {
		b, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Error: "the regional leaf holds no table yet and the control plane is unreachable"})
		m.Respond(b)
		k.m.requests.WithLabelValues("none").Inc()
		return
	}
	if m.Respond(h.reply) == nil {
		k.served.Add(1)
		k.m.requests.WithLabelValues("served").Inc()
	}
}

// handle notes heartbeats and updates that show a newer table.
func (k *Keeper) handle(m *nats.Msg) {
	var epoch, rev uint64
	switch m.Subject {
	case tablewire.SubjectHeartbeat:
		if tablewire.Verify(k.cfg.Keys, tablewire.ContextHeartbeat, tablewire.HeartbeatSignatureField, m.Data) != nil {
			return
		}
		hb := &tablev1.Heartbeat{}
		if proto.Unmarshal(m.Data, hb) != nil || k.checkCluster(hb.GetClusterId()) != nil {
			return
		}
		epoch, rev = hb.GetEpoch(), hb.GetRevision()
		k.mu.Lock()
		k.leaderRev = rev
		k.mu.Unlock()
	case tablewire.SubjectUpdate:
		if tablewire.Verify(k.cfg.Keys, tablewire.ContextUpdate, tablewire.SignatureField, m.Data) != nil {
			return
		}
		u, err := tablewire.DecodeUpdate(m.Data, k.cfg.MaxBytes)
		if err != nil {
			return
		}
		if f := u.GetFull(); f != nil {
			epoch, rev = f.GetEpoch(), f.GetRevision()
		} else {
			epoch, rev = u.GetDelta().GetEpoch(), u.GetDelta().GetRevision()
		}
	default:
		return
	}
	if h := k.cur.Load(); h != nil && !newer(epoch, rev, h.table.GetEpoch(), h.table.GetRevision()) {
		return
	}
	k.mu.Lock()
	if !k.want || newer(epoch, rev, k.wantEpoch, k.wantRev) {
		k.want, k.wantEpoch, k.wantRev = true, epoch, rev
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// newer orders (epoch, revision) pairs as edges do: a higher epoch wins
// whatever its revision.
func newer(epoch, rev, curEpoch, curRev uint64) bool {
	if epoch != curEpoch {
		return epoch > curEpoch
	}
	return rev > curRev
}

// fetch asks the hub for its snapshot and keeps it when it is newer.
func (k *Keeper) fetch() {
	have := uint64(0)
	if h := k.cur.Load(); h != nil {
		have = h.table.GetRevision()
	}
	req, _ := tablewire.Encode(&tablev1.SnapshotRequest{Schema: tablewire.Schema, Node: "leaf:" + k.cfg.Name, HaveRevision: have})
	msg, err := k.nc.Request(tablewire.SubjectSnapshot, req, k.cfg.SnapshotTimeout)
	if err == nil {
		err = k.keep(msg.Data)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.m.fetches.WithLabelValues("error").Inc()
		k.lastErr = err.Error()
		k.nextFetch = time.Now().Add(k.cfg.Retry.Delay(k.fetchTries))
		k.fetchTries++
		k.log.Debug("snapshot fetch failed; retrying", "err", err)
		return
	}
	k.m.fetches.WithLabelValues("ok").Inc()
	k.lastErr, k.fetchTries, k.nextFetch = "", 0, time.Time{}
	if h := k.cur.Load(); h != nil && !newer(k.wantEpoch, k.wantRev, h.table.GetEpoch(), h.table.GetRevision()) {
		k.want = false
	}
}

// keep verifies a snapshot reply and, when it is newer than the one held
// (or the first), writes it to disk and then holds it.
func (k *Keeper) keep(b []byte) error {
	h, err := k.check(b)
	if err != nil {
		return err
	}
	old := k.cur.Load()
	if old != nil && !newer(h.table.GetEpoch(), h.table.GetRevision(), old.table.GetEpoch(), old.table.GetRevision()) {
		return nil
	}
	if err := tablewire.WriteCache(k.cfg.CachePath, tablewire.CacheLeafSnapshot, h.reply); err != nil {
		// Still hold it: the region gets it while this process lives.
		k.log.Error("table cache not written", "path", k.cfg.CachePath, "err", err)
	}
	k.cur.Store(h)
	k.log.Info("holding table", "revision", h.table.GetRevision(), "epoch", h.table.GetEpoch(), "edges", len(h.keys))
	if k.OnIdentities != nil && (old == nil || !sameKeys(old.keys, h.keys)) {
		k.OnIdentities()
	}
	return nil
}

func sameKeys(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
