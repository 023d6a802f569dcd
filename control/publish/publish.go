// Package publish distributes the routing table from the control plane to
// the edges over NATS. Every control node compiles its state on each
// commit (control/compile), answers snapshot requests with its last valid
// table, and records the revisions edges report. The leader alone
// publishes an update for every new valid revision, a delta or the whole
// table, and a heartbeat every second.
//
// A table that fails validation is never published: the node keeps
// serving its last valid one, and reports the reason in its status and
// metrics. This package must never log a provider's secret_ref, and never
// block the FSM: it reads immutable states.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/compile"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Publisher is one control node's side of table distribution.
//
// Lock ordering: mu is a leaf; nothing else is locked while it is held.
// The current table is an atomic pointer, read without locks by the
// snapshot responder.
type Publisher struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	good atomic.Pointer[compiled] // last valid table; nil before the first
	// signer is the table key last opened; only compileState, on Run's
	// goroutine, touches it.
	signer *signer

	mu           sync.Mutex // guards the fields below
	stateRev     uint64     // index of the newest state compiled
	rejected     string     // why the newest state was not published
	rejectedRev  uint64
	leading      bool
	publishedRev uint64 // last revision this node published while leading
	edges        map[string]*edgeRecord
}

// compiled is a valid table with its ready-made messages.
type compiled struct {
	table    *tablev1.RoutingTable
	bytes    []byte
	full     []byte // signed TableUpdate carrying the whole table
	snapshot []byte // signed SnapshotReply carrying it
	signer   *signer
	// placements are the table's placements resolved to nodes, without
	// readiness, which Status adds from the edges' reports.
	placements []PlacementStatus
}

// New checks the config and returns a publisher; Run starts it.
func New(cfg Config) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, log: cfg.Logger.With("component", "publish"), m: newMetrics(cfg.Registerer), edges: map[string]*edgeRecord{}}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(edgesCollector{p, prometheus.NewDesc("meridian_control_edges",
			"Edges by the state of their routing table, as their reports show: current, behind, ahead, stale or silent.", []string{"state"}, nil)})
	}
	return p, nil
}

// Run answers snapshot requests, records edges' reports and, while this
// node leads, publishes updates and heartbeats, until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	nc := p.cfg.Conn
	snap, err := nc.QueueSubscribe(tablewire.SubjectSnapshot, tablewire.SnapshotQueue, p.serveSnapshot)
	if err != nil {
		return fmt.Errorf("publish: subscribe %s: %w", tablewire.SubjectSnapshot, err)
	}
	defer snap.Unsubscribe()
	applied, err := nc.Subscribe(tablewire.SubjectApplied, p.recordApplied)
	if err != nil {
		return fmt.Errorf("publish: subscribe %s: %w", tablewire.SubjectApplied, err)
	}
	defer applied.Unsubscribe()
	// Edges with their own NATS identity report on their own subject.
	own, err := nc.Subscribe(tablewire.SubjectApplied+".>", p.recordApplied)
	if err != nil {
		return fmt.Errorf("publish: subscribe %s.>: %w", tablewire.SubjectApplied, err)
	}
	defer own.Unsubscribe()

	watch := p.cfg.Source.Watch()
	p.compileState()
	hb := time.NewTimer(0)
	defer hb.Stop()
	// published is the last table this node published while leading;
	// nil when it does not lead, so a new term starts with a full table.
	var published *tablev1.RoutingTable
	for {
		leader := p.cfg.IsLeader()
		if !leader {
			published = nil
		} else if good := p.good.Load(); good != nil && (published == nil || good.table.GetRevision() > published.GetRevision()) {
			if err := p.publishUpdate(published, good); err != nil {
				p.log.Warn("publishing the table failed; retrying", "revision", good.table.GetRevision(), "err", err)
			} else {
				published = good.table
			}
		}
		p.mu.Lock()
		p.leading = leader
		p.publishedRev = published.GetRevision()
		p.mu.Unlock()
		p.m.leader.Set(b2f(leader))

		select {
		case <-ctx.Done():
			return nil
		case <-watch:
			watch = p.cfg.Source.Watch()
			p.compileState()
		case <-hb.C:
			if leader && published != nil {
				p.heartbeat(published)
			}
			// Up to 10% early, so a heartbeat is never late because of it.
			hb.Reset(backoff.Between(p.cfg.HeartbeatInterval-p.cfg.HeartbeatInterval/10, p.cfg.HeartbeatInterval))
		}
	}
}

// compileState compiles the current state, keeping the last valid table
// when the new one fails.
func (p *Publisher) compileState() {
	s := p.cfg.Source.State()
	if g := p.good.Load(); g != nil && g.table.GetRevision() >= s.Index() {
		return
	}
	if s.Index() == 0 {
		return // nothing committed yet (a cluster still electing): no table, and nothing wrong
	}
	p.mu.Lock()
	seen := p.stateRev == s.Index() && p.rejected != ""
	p.mu.Unlock()
	if seen {
		return // this state was rejected already; a rejected write changed nothing
	}
	cfg := p.cfg.Compile
	// A table must fit in one NATS message, whatever the server allows.
	if max := int(p.cfg.Conn.MaxPayload()) - 4096; max > 0 && max < cfg.MaxBytes {
		cfg.MaxBytes = max
	}
	sg, err := p.signerFor(s.Identity())
	if err != nil {
		p.mu.Lock()
		p.stateRev = s.Index()
		changed := p.rejected != err.Error()
		p.rejected, p.rejectedRev = err.Error(), s.Index()
		p.mu.Unlock()
		if changed && !errors.Is(err, errNoIdentity) {
			p.log.Error("cannot sign the routing table; edges keep the last valid one", "revision", s.Index(), "err", err)
		}
		return
	}
	t, err := compile.Compile(cfg, s)
	p.mu.Lock()
	p.stateRev = s.Index()
	if err != nil {
		changed := p.rejected != err.Error()
		p.rejected, p.rejectedRev = err.Error(), s.Index()
		p.mu.Unlock()
		p.m.rejected(err.Error(), s.Index())
		if changed {
			p.log.Error("routing table rejected; edges keep the last valid one", "revision", s.Index(), "err", err)
		}
		return
	}
	p.rejected, p.rejectedRev = "", 0
	p.mu.Unlock()
	p.m.accepted(t.Table.GetRevision(), len(t.Bytes))
	snap := wrap(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), tablewire.Schema), 2, t.Bytes)
	p.good.Store(&compiled{table: t.Table, bytes: t.Bytes, signer: sg,
		full:       sg.sign(tablewire.ContextUpdate, tablewire.SignatureField, wrap(nil, 2, t.Bytes)),
		snapshot:   sg.sign(tablewire.ContextSnapshot, tablewire.SignatureField, snap),
		placements: resolvePlacements(t.Table, t.Edge)})
}

// wrap appends t's bytes as field num of a message: the encoding of a
// TableUpdate{full} or SnapshotReply{table}, without re-encoding the
// table.
func wrap(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// publishUpdate sends what turns prev into next: the whole table when
// there is no prev, when the table is small, or when the delta would not
// be smaller.
func (p *Publisher) publishUpdate(prev *tablev1.RoutingTable, next *compiled) error {
	payload, kind := next.full, "full"
	// A delta never crosses epochs or clusters: after a restore the
	// edges get the whole table.
	if prev != nil && len(next.bytes) > p.cfg.FullMaxBytes && prev.GetEpoch() == next.table.GetEpoch() && prev.GetClusterId() == next.table.GetClusterId() {
		d := tablewire.Diff(prev, next.table)
		if b, err := tablewire.Encode(&tablev1.TableUpdate{Update: &tablev1.TableUpdate_Delta{Delta: d}}); err == nil && len(b) < len(next.full) {
			payload, kind = next.signer.sign(tablewire.ContextUpdate, tablewire.SignatureField, b), "delta"
		}
	}
	if err := p.cfg.Conn.Publish(tablewire.SubjectUpdate, payload); err != nil {
		return err
	}
	p.m.published.WithLabelValues(kind).Inc()
	return nil
}

func (p *Publisher) heartbeat(published *tablev1.RoutingTable) {
	g := p.good.Load()
	if g == nil {
		return
	}
	p.mu.Lock()
	hb := &tablev1.Heartbeat{
		Schema: tablewire.Schema, Revision: published.GetRevision(), Leader: p.cfg.NodeID, StateRevision: p.stateRev,
		Rejected: p.rejected, IntervalMs: uint32(p.cfg.HeartbeatInterval.Milliseconds()),
		ClusterId: published.GetClusterId(), Epoch: published.GetEpoch(),
	}
	p.mu.Unlock()
	b, err := tablewire.Encode(hb)
	if err == nil {
		err = p.cfg.Conn.Publish(tablewire.SubjectHeartbeat, g.signer.sign(tablewire.ContextHeartbeat, tablewire.HeartbeatSignatureField, b))
	}
	if err != nil {
		p.log.Warn("heartbeat failed", "err", err)
	}
}

// maxRequest bounds snapshot requests and applied reports, bytes.
const maxRequest = 64 << 10

func (p *Publisher) serveSnapshot(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	req := &tablev1.SnapshotRequest{}
	if len(m.Data) > maxRequest || proto.Unmarshal(m.Data, req) != nil {
		p.m.snapshots.WithLabelValues("bad_request").Inc()
		return
	}
	g := p.good.Load()
	if g == nil {
		p.mu.Lock()
		why := p.rejected
		p.mu.Unlock()
		if why == "" {
			why = "no table compiled yet"
		}
		b, _ := tablewire.Encode(&tablev1.SnapshotReply{Schema: tablewire.Schema, Error: why})
		// Unsigned: an edge treats it as no answer, as it would a
		// forged one.
		m.Respond(b)
		p.m.snapshots.WithLabelValues("none").Inc()
		return
	}
	if err := m.Respond(g.snapshot); err != nil {
		p.log.Warn("snapshot reply failed", "node", req.GetNode(), "err", err)
		return
	}
	p.m.snapshots.WithLabelValues("ok").Inc()
}

// Table returns the last valid table this node compiled, or nil.
func (p *Publisher) Table() *tablev1.RoutingTable {
	if g := p.good.Load(); g != nil {
		return g.table
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
