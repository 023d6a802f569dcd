// Package cluster runs a control node's Raft member: the write-ahead log,
// snapshots and TCP transport on disk and network, bootstrap, membership
// changes, and applying commands with their outcome classified so callers
// know when a retry is safe.
//
// It knows nothing of HTTP; the management API forwards writes to the
// leader using the addresses this package reports. It must never apply a
// command outside Raft, and never modify the FSM's state directly.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
)

// Errors from Apply and the membership calls.
var (
	// ErrNotLeader means this node is not the leader; the command was not
	// applied. Forward it or retry.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnknownOutcome means the command may or may not have applied
	// (leadership was lost while it committed). Retry it with the same
	// request ID: the FSM applies a request ID once.
	ErrUnknownOutcome = errors.New("outcome unknown: leadership lost while committing; retry with the same request ID")
	// ErrNotReady means this node leads but has not yet caught up with
	// its predecessor's writes, so it cannot serve a consistent read.
	ErrNotReady = errors.New("leader not yet ready for consistent reads")
	// ErrClosed means the node has shut down.
	ErrClosed = errors.New("control node shut down")
	// ErrStoreDamaged means the node's Raft log or snapshot store in its
	// data dir does not open; the node does not start from it.
	ErrStoreDamaged = errors.New("raft store damaged")
)

// Node is one control node's Raft member.
type Node struct {
	cfg    Config
	id     string
	fsm    *fsm.FSM
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	wal    *raftwal.WAL
	meta   *metadb.BoltMetaDB
	logger *slog.Logger

	ready    atomic.Bool // leader and caught up: consistent reads allowed
	notifyCh chan bool
	// leaderChange is closed, and replaced, when the known leader changes.
	leaderChange atomic.Pointer[chan struct{}]
	observeCh    chan raft.Observation
	stop         chan struct{}
	done         sync.WaitGroup
	// closeMu guards closed and is held across Close's shutdown; it is
	// the only lock Node takes, and never taken from raft callbacks.
	closeMu sync.Mutex
	closed  bool

	// snaps and opened date the newest snapshot (metrics.go);
	// commitSeconds times this node's applies.
	snaps         raft.SnapshotStore
	opened        time.Time
	commitSeconds prometheus.Histogram
}

// Open starts a node from its data folder, bootstrapping a new cluster
// when the config asks and the folder holds no Raft state.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "raft", "wal"), 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	id, err := LoadOrCreateID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, id: id, logger: cfg.Logger.With("node", cfg.NodeName), notifyCh: make(chan bool, 8), stop: make(chan struct{}),
		observeCh: make(chan raft.Observation, 16)}
	first := make(chan struct{})
	n.leaderChange.Store(&first)
	n.opened, n.commitSeconds = time.Now(), newCommitHistogram()
	n.fsm = fsm.New(fsm.Config{Logger: n.logger, OnApply: cfg.OnApply})
	hlog := newHCLogger(n.logger)

	// The node owns the WAL's metadata database: raft-wal v0.4.1 closes it
	// in Close, but not when Open fails, and v0.4.0 never did, which left
	// it locked for a node restarted in the same process. Closing it again
	// is a no-op.
	n.meta = &metadb.BoltMetaDB{}
	walDir := filepath.Join(cfg.DataDir, "raft", "wal")
	n.wal, err = raftwal.Open(walDir, raftwal.WithLogger(hlog.Named("wal")), raftwal.WithMetaStore(n.meta))
	if err != nil {
		n.meta.Close()
		return nil, damaged(cfg.DataDir, "raft log in "+walDir, err)
	}
	logs, err := raft.NewLogCache(512, n.wal)
	if err != nil {
		n.wal.Close()
		n.meta.Close()
		return nil, fmt.Errorf("log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "raft"), 2, hlog.Named("snapshot"))
	if err != nil {
		n.wal.Close()
		n.meta.Close()
		return nil, damaged(cfg.DataDir, "snapshot store in "+filepath.Join(cfg.DataDir, "raft", "snapshots"), err)
	}
	n.snaps = snaps
	// raft.NewRaft panics on a log entry it cannot read; read everything
	// it will read first, so a damaged store is an error with a way back.
	if err := checkStores(cfg.DataDir, n.wal, n.wal, snaps); err != nil {
		n.wal.Close()
		n.meta.Close()
		return nil, err
	}
	var advertise net.Addr
	if a := cfg.RaftAdvertise; a != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", a); err != nil {
			n.wal.Close()
			n.meta.Close()
			return nil, fmt.Errorf("raft advertise %q: %w", a, err)
		}
	}
	n.trans, err = openTransport(cfg, advertise, &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog.Named("transport")})
	if err != nil {
		n.wal.Close()
		n.meta.Close()
		return nil, fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = hlog
	rc.NotifyCh = n.notifyCh
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.CommitTimeout
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if err := raft.ValidateConfig(rc); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("raft config: %w", err)
	}

	existing, err := raft.HasExistingState(logs, n.wal, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, (*raftFSM)(n), logs, n.wal, snaps, n.trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if !existing && (cfg.Bootstrap || len(cfg.Peers) > 0) {
		var servers []raft.Server
		if cfg.Bootstrap {
			servers = []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: n.trans.LocalAddr()}}
		}
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.raft.Shutdown()
			n.closeStores()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	n.raft.RegisterObserver(raft.NewObserver(n.observeCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	n.done.Add(2)
	go n.leaderLoop()
	go n.observe()
	return n, nil
}

// checkStores reads what raft.NewRaft reads at start: the stored term,
// the newest snapshot that opens, and every log entry after it up to the
// last, which raft scans for configuration changes and panics on if one
// cannot be read.
func checkStores(dataDir string, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) error {
	walDir := filepath.Join(dataDir, "raft", "wal")
	if _, err := stable.GetUint64([]byte("CurrentTerm")); err != nil && err.Error() != "not found" {
		return damaged(dataDir, "raft stable store in "+walDir, err)
	}
	metas, err := snaps.List()
	if err != nil {
		return damaged(dataDir, "snapshot store in "+filepath.Join(dataDir, "raft", "snapshots"), err)
	}
	var snapIndex uint64
	var snapErr error
	for _, m := range metas {
		_, rc, err := snaps.Open(m.ID)
		if err != nil {
			snapErr = errors.Join(snapErr, fmt.Errorf("snapshot %s: %w", m.ID, err))
			continue
		}
		rc.Close()
		snapIndex = m.Index
		break
	}
	if len(metas) > 0 && snapIndex == 0 {
		return damaged(dataDir, "snapshot store in "+filepath.Join(dataDir, "raft", "snapshots"), snapErr)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return damaged(dataDir, "raft log in "+walDir, err)
	}
	var entry raft.Log
	for i := snapIndex + 1; i <= last; i++ {
		if err := logs.GetLog(i, &entry); err != nil {
			return damaged(dataDir, "raft log in "+walDir, fmt.Errorf("entry %d of %d: %w", i, last, err))
		}
	}
	return nil
}

// damaged is the error for a store that does not open: what, where, why,
// and the way back.
func damaged(dataDir, what string, cause error) error {
	raftDir := filepath.Join(dataDir, "raft")
	return fmt.Errorf("%w: the %s cannot be read: %v. The way back: stop this node, move %s aside "+
		"(keep %s, the node's ID), and start it again without -bootstrap, -bootstrap-expect or -peers; "+
		"it rejoins as the same voter with an empty log, and the leader sends it the state (a snapshot once its log no longer reaches back)",
		ErrStoreDamaged, what, cause, raftDir, filepath.Join(dataDir, "node-id"))
}

func (n *Node) closeStores() {
	if n.trans != nil {
		n.trans.Close()
	}
	n.wal.Close()
	n.meta.Close()
}

// LoadOrCreateID returns the node ID stored in dir, creating it on first
// start. want, if not empty, is the ID to create; it must match a stored
// one.
func LoadOrCreateID(dir, want string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if want != "" && want != id {
			return "", fmt.Errorf("node ID %q asked for, but %s holds %q", want, path, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node ID: %w", err)
	}
	id := want
	if id == "" {
		id = NewUUID()
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write node ID: %w", err)
	}
	return id, nil
}

// HasState reports whether dir holds a Raft log or snapshot, so the
// node would rejoin its cluster rather than need a bootstrap.
func HasState(dir string) bool {
	for _, sub := range []string{"wal", "snapshots"} {
		ents, err := os.ReadDir(filepath.Join(dir, "raft", sub))
		if err == nil && len(ents) > 0 {
			return true
		}
	}
	return false
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// ID returns the node's Raft server ID.
func (n *Node) ID() string { return n.id }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// RaftAddr returns the address other nodes reach this node's Raft at.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// APIAddr returns this node's management API base URL.
func (n *Node) APIAddr() string { return n.cfg.APIAddr }

// FSM returns the node's state machine, for reads.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node currently leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's ID and Raft address, if one is known.
func (n *Node) Leader() (id, raftAddr string, ok bool) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr), sid != ""
}

// LeaderAPI returns the leader's API base URL, if a leader is known and
// has recorded its address.
func (n *Node) LeaderAPI() (string, bool) {
	id, _, ok := n.Leader()
	if !ok {
		return "", false
	}
	if id == n.id {
		return n.cfg.APIAddr, true
	}
	m, ok := n.fsm.State().Member(id)
	if !ok || m.GetApiAddr() == "" {
		return "", false
	}
	return m.GetApiAddr(), true
}

// Apply replicates one command and returns its result once this node has
// applied it. It fails with ErrNotLeader (not applied) or
// ErrUnknownOutcome (retry with the same request ID).
func (n *Node) Apply(t fsm.Type, msg proto.Message) (*controlv1.Result, error) {
	b, err := fsm.Encode(t, msg)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return nil, classify(err)
	}
	n.commitSeconds.Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*controlv1.Result)
	if !ok {
		return nil, fmt.Errorf("apply: unexpected response %T", f.Response())
	}
	return res, nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrClosed)
	}
	return err
}

// ConsistentRead returns once this node's state reflects every write
// acknowledged before the call: it must lead, have caught up after its
// election, and confirm with a quorum that it still leads.
func (n *Node) ConsistentRead() error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if !n.ready.Load() {
		return ErrNotReady
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return classify(err)
	}
	return nil
}

// Server is one member of the Raft configuration.
type Server struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr,omitempty"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
}

// Servers returns the Raft configuration with each member's recorded
// addresses.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	leaderID, _, _ := n.Leader()
	st := n.fsm.State()
	var out []Server
	for _, s := range f.Configuration().Servers {
		srv := Server{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: string(s.ID) == leaderID}
		if m, ok := st.Member(string(s.ID)); ok {
			srv.Name, srv.APIAddr = m.GetName(), m.GetApiAddr()
		}
		if srv.ID == n.id {
			srv.Name, srv.APIAddr = n.cfg.NodeName, n.cfg.APIAddr
		}
		out = append(out, srv)
	}
	return out, nil
}

// Stats are a node's Raft indexes and state.
type Stats struct {
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	StateIndex   uint64 `json:"state_index"`
}

// Stats returns the node's Raft indexes.
func (n *Node) Stats() Stats {
	return Stats{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		StateIndex:   n.fsm.State().Index(),
	}
}

// AddVoter adds a node to the cluster, and records its API address. It
// must run on the leader.
func (n *Node) AddVoter(id, raftAddr, name, apiAddr string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, classify(err))
	}
	_, err := n.Apply(fsm.TypeSetMember, &controlv1.SetMember{RequestId: NewUUID(),
		Member: &controlv1.Member{Id: id, Name: name, RaftAddr: raftAddr, ApiAddr: apiAddr}})
	return err
}

// RemoveServer removes a node from the cluster. It must run on the
// leader; a leader removing itself hands leadership over first.
func (n *Node) RemoveServer(id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if id == n.id {
		// Either way the caller retries: after a hand-over the new leader
		// removes this node; after a failed one (a timeout on a busy
		// machine) this node tries again.
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("%w: hand over leadership before removal: %v", ErrNotLeader, err)
		}
		return ErrNotLeader
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, classify(err))
	}
	_, err := n.Apply(fsm.TypeRemoveMember, &controlv1.RemoveMember{RequestId: NewUUID(), Id: id})
	return err
}

// Snapshot makes Raft take a snapshot now and compact its log.
func (n *Node) Snapshot() error {
	return n.raft.Snapshot().Error()
}

// Restore replaces the cluster's whole state with a snapshot written by
// fsm.State.WriteTo. It must run on the leader; followers receive it as
// an installed snapshot. The snapshot is checked before Raft sees it.
func (n *Node) Restore(data []byte) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	st, err := fsm.ReadState(bytes.NewReader(data))
	if err != nil {
		return err
	}
	id, err := restoredIdentity(n.fsm.State().Identity(), st.Identity())
	if err != nil {
		return err
	}
	if id != nil {
		st = st.WithIdentity(id)
	}
	// Re-encoded always: the identity changed, and the index must pass
	// the current one.
	idx := st.Index()
	if cur := n.raft.LastIndex(); idx <= cur {
		idx = cur + 1
	}
	var buf bytes.Buffer
	if _, err := st.WithIndex(idx).WriteTo(&buf); err != nil {
		return err
	}
	data = buf.Bytes()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(data))}
	if err := n.raft.Restore(meta, bytes.NewReader(data), n.cfg.ApplyTimeout); err != nil {
		return fmt.Errorf("restore: %w", classify(err))
	}
	// The snapshot's member records may be stale; put ours back.
	n.ensureMember()
	return nil
}

// Leave steps down if this node leads, handing leadership to another
// voter, then shuts down. The node stays a voter; remove it through the
// API to shrink the cluster.
func (n *Node) Leave() error {
	if servers, err := n.Servers(); err == nil && len(servers) > 1 && n.IsLeader() {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.logger.Warn("leadership transfer before leaving failed", "err", err)
		}
	}
	return n.Close()
}

// Close shuts the node down without handing leadership over, as a crash
// would (but with the log flushed).
func (n *Node) Close() error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	close(n.stop)
	err := n.raft.Shutdown().Error()
	n.done.Wait()
	n.closeStores()
	return err
}

// leaderLoop follows leadership changes. On winning an election it waits
// for a barrier, so the state holds every write the old leader
// acknowledged, before allowing consistent reads; then it records this
// node's API address so followers can forward to it.
func (n *Node) leaderLoop() {
	defer n.done.Done()
	tick := time.NewTimer(backoff.Between(time.Second, time.Second+time.Second/4))
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-n.notifyCh:
			n.ready.Store(false)
			if leader {
				if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
					n.logger.Warn("barrier after election failed", "err", err)
					continue
				}
				n.ready.Store(true)
				n.logger.Info("leading", "term", n.raft.CurrentTerm())
				n.ensureIdentity()
				n.ensureMember()
			}
		case <-tick.C:
			if n.IsLeader() && n.ready.Load() {
				n.ensureIdentity()
				n.ensureMember()
			}
			tick.Reset(backoff.Between(time.Second, time.Second+time.Second/4))
		}
	}
}

// observe wakes LeaderChanged's waiters on every change of leader.
func (n *Node) observe() {
	defer n.done.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.observeCh:
			next := make(chan struct{})
			close(*n.leaderChange.Swap(&next))
		}
	}
}

// LeaderChanged returns a channel closed the next time the known leader
// changes (to another node or to none), so a request held for a leader
// retries at once rather than on its next poll.
func (n *Node) LeaderChanged() <-chan struct{} { return *n.leaderChange.Load() }

// TransferLeadership hands leadership to the most up-to-date other voter
// and returns once this node has stepped down. It must run on the leader;
// a failed transfer leaves this node leading and is not ErrNotLeader, so
// a caller that retries on another node does not transfer twice.
func (n *Node) TransferLeadership() error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return fmt.Errorf("leadership transfer: %v", err)
	}
	return nil
}

// ensureMember records this node's addresses if the state lacks them,
// and the bootstrap peers' API addresses where they are known and not
// yet recorded.
func (n *Node) ensureMember() {
	want := &controlv1.Member{Id: n.id, Name: n.cfg.NodeName, RaftAddr: n.RaftAddr(), ApiAddr: n.cfg.APIAddr}
	if m, ok := n.fsm.State().Member(n.id); !ok || !proto.Equal(m, want) {
		if _, err := n.Apply(fsm.TypeSetMember, &controlv1.SetMember{RequestId: NewUUID(), Member: want}); err != nil {
			n.logger.Warn("recording own address failed", "err", err)
			return
		}
	}
	for _, p := range n.cfg.Peers {
		if p.ID == n.id || p.APIAddr == "" {
			continue
		}
		if _, ok := n.fsm.State().Member(p.ID); ok {
			continue
		}
		m := &controlv1.Member{Id: p.ID, Name: p.Name, RaftAddr: p.Addr, ApiAddr: p.APIAddr}
		if _, err := n.Apply(fsm.TypeSetMember, &controlv1.SetMember{RequestId: NewUUID(), Member: m}); err != nil {
			n.logger.Warn("recording a peer's address failed", "peer", p.ID, "err", err)
			return
		}
	}
}

// raftFSM adapts the FSM to raft's interface.
type raftFSM Node

var _ raft.FSM = (*raftFSM)(nil)

func (r *raftFSM) Apply(l *raft.Log) any {
	return r.fsm.Apply(l.Index, l.Data)
}

func (r *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{state: r.fsm.State()}, nil
}

func (r *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return r.fsm.Restore(rc)
}

// fsmSnapshot holds an immutable State; Persist writes it out while
// applies continue.
type fsmSnapshot struct{ state *fsm.State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.state.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// newHCLogger bridges raft's hclog to slog: hclog writes lines, which are
// passed on as slog records.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            "raft",
		Level:           hclog.Info,
		Output:          &slogWriter{l: l},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[DEBUG]"), strings.HasPrefix(line, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}
