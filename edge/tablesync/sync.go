// Package tablesync keeps an edge's routing table in step with the
// control plane over NATS: a snapshot on start, then the leader's updates
// (deltas or whole tables), a new snapshot whenever a delta does not
// follow the revision the edge holds, heartbeats to tell when the table is
// stale, the last good table on disk for starting while the control plane
// is down, and a report to the control plane after each change.
//
// A table is built whole beside the one in use and swapped in by the
// gateway, so a request never sees half of one. A table that fails any
// check is rejected and the old one kept; the rejection is logged,
// counted and reported. This package must never log a credential or a
// secret_ref, and never block the request path: everything runs on its
// own goroutine.
package tablesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Sources of the table in use.
const (
	SourceNone    = ""
	SourceConfig  = "config"
	SourceDisk    = "disk"
	SourceControl = "control"
)

// Status is the edge's view of its table, for /readyz, metrics and the
// x-meridian-table-rev header.
type Status struct {
	// Revision is the table in use; 0 for a table from the config file.
	Revision uint64 `json:"revision"`
	// Source is where it came from: "config", "disk" or "control".
	Source string `json:"source"`
	// Stale is true while the edge cannot confirm its table is current:
	// no control node has answered since start, no heartbeat arrived for
	// a few intervals, or the edge stays behind the heartbeat's revision.
	Stale bool `json:"stale"`
	// Connected is whether a NATS server is connected.
	Connected bool `json:"connected"`
	// Server is the connected server's address, credentials redacted.
	Server string `json:"server,omitempty"`
	// Servers are the control plane's NATS servers the edge knows of:
	// the configured ones and those the cluster told it about, which it
	// moves to when its server fails.
	Servers []string `json:"servers,omitempty"`
	// LeaderRevision is the revision of the last heartbeat heard.
	LeaderRevision uint64 `json:"leader_revision,omitempty"`
	// LastContact is when the control plane was last heard from.
	LastContact time.Time `json:"last_contact,omitzero"`
	// RejectedRevision and RejectedReason describe the last table
	// rejected since one was last applied.
	RejectedRevision uint64 `json:"rejected_revision,omitempty"`
	RejectedReason   string `json:"rejected_reason,omitempty"`
	// Unusable lists providers whose secret did not resolve here.
	Unusable []string `json:"unusable,omitempty"`
	// ControlRejected is why the control plane's newest state was not
	// published, from its heartbeat: the edge serves the last valid
	// table meanwhile.
	ControlRejected string `json:"control_rejected,omitempty"`
	// Epoch and ClusterID are the table's control-plane epoch and
	// cluster, empty for a table from the config file.
	Epoch     uint64 `json:"epoch,omitempty"`
	ClusterID string `json:"cluster_id,omitempty"`
	// CachedRevision is the revision of the table in the disk cache:
	// the one a restart without a control plane would serve. 0 until a
	// table was read from or written to disk.
	CachedRevision uint64 `json:"cached_revision,omitempty"`
	// Unverified is why the edge last refused a control message before
	// using it (bad or missing signature, another cluster's); empty since
	// the next verified table.
	Unverified string `json:"unverified,omitempty"`
}

// Syncer is an edge's table client.
//
// The loop goroutine owns every field below loop; Status is published
// through an atomic pointer. mu guards only conn-related fields set once.
type Syncer struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	status atomic.Pointer[Status]

	nc      *nats.Conn
	msgs    chan *nats.Msg
	kick    chan bool       // a connection is up (true: a reconnection); maybe ask for a snapshot
	persist chan cacheWrite // latest table to write to disk; one slot
	cached  atomic.Uint64   // revision in the disk cache (Status.CachedRevision)
	// behind is the loop's behindSince in Unix nanoseconds, 0 when not
	// behind, for the lag gauge (read at scrape time, off the loop).
	behind atomic.Int64
	// discovered is set when the server list may have grown, so the loop
	// reads it again for Status.Servers.
	discovered atomic.Bool
	ready      chan struct{} // the ready models changed: report; one slot
	done       sync.WaitGroup
	stop       context.CancelFunc
	synced     atomic.Bool // a table from the control plane was applied
	trust      atomic.Pointer[trust]

	// loop state
	conv         *tablewire.Converter
	reportTimer  *time.Timer           // nil until the loop runs
	reportSoon   bool                  // a report is due shortly, after a change
	readyTimer   *time.Timer           // a held-back ready report; nil when none is due
	readySent    time.Time             // when the last ready report went out
	cur          *tablev1.RoutingTable // last table from the control plane or disk; nil for config
	tab          *table.Table          // cur converted, as handed to Apply or Patch
	ix           *tablewire.Index      // cur's index for leaf deltas; nil until the first one
	patches      int                   // deltas patched in since the table was last built whole
	curSize      int                   // cur's encoded size, bytes, or an upper bound of it
	st           Status
	hbInterval   time.Duration
	behindSince  time.Time
	needSnapshot bool
	nextSnapshot time.Time
	retry        time.Duration
}

// New checks the config and returns a Syncer; nothing connects until
// Start.
func New(cfg Config) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, u := range cfg.URLs {
		if strings.Contains(u, "@") {
			return nil, errors.New("tablesync: NATS URLs must not carry credentials; use the user, password or token settings")
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Syncer{
		cfg: cfg, log: cfg.Logger.With("component", "tablesync"), m: m,
		msgs: make(chan *nats.Msg, 4096), kick: make(chan bool, 2), persist: make(chan cacheWrite, 1),
		ready:      make(chan struct{}, 1),
		hbInterval: cfg.HeartbeatInterval, retry: cfg.RetryMin, conv: tablewire.NewConverter(cfg.Resolver),
	}
	if err := s.registerLag(cfg.Registerer); err != nil {
		return nil, err
	}
	s.trust.Store(&trust{keys: slices.Clone(cfg.TableKeys), cluster: cfg.ClusterID})
	s.st.Stale = true
	s.publishStatus()
	return s, nil
}

// Status returns the edge's view of its table. It is safe to call from
// any goroutine, on every request.
func (s *Syncer) Status() Status {
	st := *s.status.Load()
	st.CachedRevision = s.cached.Load()
	return st
}

// Seed installs a table from the edge's own config through the same path
// control tables take, before Start. It is revision 0, so any table from
// the control plane or the disk replaces it.
func (s *Syncer) Seed(t *table.Table) error {
	t.Revision = 0
	if err := s.cfg.Apply(t); err != nil {
		return fmt.Errorf("static table: %w", err)
	}
	s.st.Source, s.st.Revision = SourceConfig, 0
	s.m.applied.WithLabelValues(SourceConfig).Inc()
	s.publishStatus()
	return nil
}

// Start loads the table on disk, connects and asks for a snapshot, then
// follows updates on its own goroutine until Close. It returns once the
// first snapshot is applied or has failed: an edge comes up with the
// best table it has, marked stale when it could not confirm it.
func (s *Syncer) Start(ctx context.Context) error {
	if s.cfg.CachePath != "" {
		switch t, err := readCache(s.cfg.CachePath, s.cfg.MaxBytes); {
		case err == nil:
			if err := s.install(t, SourceDisk, tablewire.Size(t)); err != nil {
				s.log.Warn("table on disk rejected", "err", err)
			} else {
				s.cached.Store(t.GetRevision())
				s.log.Info("serving the table from disk until the control plane answers", "revision", t.GetRevision())
			}
		case errors.Is(err, tablewire.ErrBadCache) || errors.Is(err, tablewire.ErrInvalid) || errors.Is(err, tablewire.ErrDecode):
			s.log.Warn("table on disk unusable", "err", err)
		}
	}
	opts := []nats.Option{
		nats.Name("meridian-edge " + s.cfg.NodeID),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(s.cfg.ReconnectWait),
		nats.ReconnectJitter(s.cfg.ReconnectJitter, 2*s.cfg.ReconnectJitter),
		nats.PingInterval(s.cfg.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.m.connected.Set(0)
			s.log.Warn("control bus disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.m.connected.Set(1)
			s.m.reconnects.Inc()
			s.log.Info("control bus reconnected", "server", nc.ConnectedUrlRedacted())
			select {
			case s.kick <- true:
			default:
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// A slow consumer drops updates; the heartbeat then shows the
			// edge behind and it fetches a snapshot.
			s.log.Warn("control bus error", "err", err)
		}),
		nats.DiscoveredServersHandler(func(*nats.Conn) { s.discovered.Store(true) }),
		nats.ConnectHandler(func(nc *nats.Conn) {
			// The first connection after a failed start: ask now.
			s.m.connected.Set(1)
			select {
			case s.kick <- false:
			default:
			}
		}),
	}
	if s.cfg.NKey != "" {
		opts = append(opts, nats.Nkey(s.cfg.NKey, s.cfg.Sign), nats.CustomInboxPrefix(tablewire.InboxPrefix(s.cfg.NodeID)))
	} else if s.cfg.User != "" {
		opts = append(opts, nats.UserInfo(s.cfg.User, s.cfg.Password))
	} else {
		opts = append(opts, nats.Token(s.cfg.Token))
	}
	if s.cfg.TLS != nil {
		opts = append(opts, nats.Secure(s.cfg.TLS))
	}
	nc, err := nats.Connect(strings.Join(s.cfg.URLs, ","), opts...)
	if err != nil {
		return fmt.Errorf("tablesync: connect: %w", err)
	}
	if nc.IsConnected() {
		s.m.connected.Set(1)
	}
	s.nc = nc
	for _, subj := range []string{tablewire.SubjectUpdate, tablewire.SubjectHeartbeat} {
		if _, err := nc.ChanSubscribe(subj, s.msgs); err != nil {
			nc.Close()
			return fmt.Errorf("tablesync: subscribe %s: %w", subj, err)
		}
	}
	ctx, s.stop = context.WithCancel(ctx)
	s.needSnapshot = true
	s.fetchSnapshot()
	s.done.Add(2)
	go s.run(ctx)
	go s.writeCacheLoop(ctx)
	return nil
}

// Close stops the client and closes its connection.
func (s *Syncer) Close() {
	if s.stop != nil {
		s.stop()
	}
	s.done.Wait()
	if s.nc != nil {
		s.nc.Close()
	}
}

func (s *Syncer) run(ctx context.Context) {
	defer s.done.Done()
	check := time.NewTimer(s.checkInterval())
	defer check.Stop()
	s.reportTimer = time.NewTimer(0)
	defer s.reportTimer.Stop()
	defer func() {
		if s.readyTimer != nil {
			s.readyTimer.Stop()
		}
	}()
	for {
		var readyDue <-chan time.Time
		if s.readyTimer != nil {
			readyDue = s.readyTimer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.ready:
			s.reportReady()
		case <-readyDue:
			s.readyTimer = nil
			s.readySent = time.Now()
			s.report()
		case m := <-s.msgs:
			s.handle(m)
		case reconnect := <-s.kick:
			// Updates published while disconnected are lost: catch up.
			if reconnect || !s.synced.Load() {
				s.needSnapshot, s.nextSnapshot = true, time.Time{}
			}
		case <-check.C:
			check.Reset(s.checkInterval())
		case <-s.reportTimer.C:
			s.report()
			s.reportSoon = false
			s.reportTimer.Reset(backoff.Spread(s.cfg.ReportInterval, 0.2))
		}
		if s.needSnapshot && !s.cfg.Now().Before(s.nextSnapshot) {
			s.fetchSnapshot()
		}
		s.updateStale()
	}
}

// checkInterval is how often staleness and retries are re-evaluated.
func (s *Syncer) checkInterval() time.Duration {
	d := s.hbInterval / 4
	if s.cfg.RetryMin < d {
		d = s.cfg.RetryMin
	}
	return max(d, 10*time.Millisecond)
}

func (s *Syncer) handle(m *nats.Msg) {
	switch m.Subject {
	case tablewire.SubjectHeartbeat:
		if err := s.verify(tablewire.ContextHeartbeat, tablewire.HeartbeatSignatureField, m.Data); err != nil {
			s.unverified("heartbeat", err)
			return
		}
		hb := &tablev1.Heartbeat{}
		if proto.Unmarshal(m.Data, hb) != nil || hb.GetSchema() == 0 {
			return
		}
		if err := s.checkCluster(hb.GetClusterId()); err != nil {
			s.unverified("heartbeat", err)
			return
		}
		now := s.cfg.Now()
		s.st.LastContact, s.st.LeaderRevision, s.st.ControlRejected = now, hb.GetRevision(), hb.GetRejected()
		if iv := time.Duration(hb.GetIntervalMs()) * time.Millisecond; iv >= MinHeartbeatInterval && iv <= MaxHeartbeatInterval {
			s.hbInterval = iv
		}
		if cmpTable(hb.GetEpoch(), hb.GetRevision(), s.cur.GetEpoch(), s.st.Revision) > 0 || s.st.Source != SourceControl && hb.GetRevision() > 0 {
			if s.behindSince.IsZero() {
				s.behindSince = now
			} else if now.Sub(s.behindSince) > 2*s.hbInterval && !s.needSnapshot {
				// An update was lost, or arrived corrupt: catch up. A
				// revision this edge rejected is asked for again only
				// slowly: it is likely rejected again.
				s.needSnapshot, s.nextSnapshot = true, time.Time{}
				if hb.GetRevision() == s.st.RejectedRevision {
					s.nextSnapshot = now.Add(backoff.Spread(s.cfg.RetryMax, 0.2))
				}
			}
		} else {
			s.behindSince = time.Time{}
		}
	case tablewire.SubjectUpdate:
		if err := s.verify(tablewire.ContextUpdate, tablewire.SignatureField, m.Data); err != nil {
			s.unverified("update", err)
			return
		}
		s.st.LastContact = s.cfg.Now()
		u, err := tablewire.DecodeUpdate(m.Data, s.cfg.MaxBytes)
		if err != nil {
			s.reject(0, err)
			return
		}
		if full := u.GetFull(); full != nil {
			if err := s.checkCluster(full.GetClusterId()); err != nil {
				s.unverified("update", err)
				return
			}
			c := cmpTable(full.GetEpoch(), full.GetRevision(), s.cur.GetEpoch(), s.st.Revision)
			if c < 0 || c == 0 && s.st.Source == SourceControl {
				return // already have it, or newer: an edge moves back only to a higher epoch
			}
			if err := s.install(full, SourceControl, len(m.Data)); err != nil {
				s.reject(full.GetRevision(), err)
			}
			return
		}
		d := u.GetDelta()
		if cmpTable(d.GetEpoch(), d.GetRevision(), s.cur.GetEpoch(), s.st.Revision) <= 0 && s.st.Source == SourceControl {
			return
		}
		if s.cur == nil || s.st.Source != SourceControl && s.st.Source != SourceDisk || d.GetPrevRevision() != s.cur.GetRevision() || d.GetEpoch() != s.cur.GetEpoch() {
			s.m.gaps.Inc()
			s.needSnapshot, s.nextSnapshot = true, time.Time{}
			return
		}
		next, ix, ch, err := tablewire.ApplyDeltaIndexed(s.cur, s.ix, d)
		if err != nil {
			s.reject(d.GetRevision(), err)
			return
		}
		// The new table is at most the old one plus the delta; only
		// when that bound passes the cap is the exact size worth its
		// cost.
		size := s.curSize + len(m.Data)
		if size > s.cfg.MaxBytes {
			if size, err = tablewire.CheckSize(next, s.cfg.MaxBytes); err != nil {
				s.reject(d.GetRevision(), err)
				return
			}
		}
		if s.patches >= FullEvery {
			// Every FullEvery patched deltas the table is checked and
			// built whole once more: whatever a patch could have missed
			// is bounded, and secrets are resolved afresh.
			if err := tablewire.Validate(next); err != nil {
				s.reject(d.GetRevision(), err)
				return
			}
			ix = nil
		} else if s.cfg.Patch != nil && s.tab != nil {
			// A leaf delta: convert and install only what it changed.
			tab, tch, ok, err := s.conv.Patch(s.tab, next, ch)
			if err == nil && ok {
				err = s.cfg.Patch(tab, tch)
			}
			if err != nil {
				s.reject(d.GetRevision(), fmt.Errorf("%w: %w", tablewire.ErrInvalid, err))
				return
			}
			if ok {
				s.m.patched.Inc()
				n := s.patches
				s.installed(next, tab, s.st.Unusable, SourceControl, size)
				s.ix, s.patches = ix, n+1
				return
			}
		}
		if err := s.install(next, SourceControl, size); err != nil {
			s.reject(d.GetRevision(), err)
			return
		}
		s.ix = ix
	}
}

// fetchSnapshot asks any control node for its table, and on failure
// schedules the next try with backoff and jitter.
func (s *Syncer) fetchSnapshot() {
	req, _ := tablewire.Encode(&tablev1.SnapshotRequest{Schema: tablewire.Schema, Node: s.cfg.NodeID, HaveRevision: s.st.Revision})
	err := nats.ErrConnectionReconnecting
	if s.nc.IsConnected() {
		var msg *nats.Msg
		if msg, err = s.nc.Request(tablewire.SubjectSnapshot, req, s.cfg.SnapshotTimeout); err == nil {
			err = s.applySnapshot(msg.Data)
		}
	}
	if err != nil {
		s.m.snapshots.WithLabelValues("error").Inc()
		s.nextSnapshot = s.cfg.Now().Add(backoff.Spread(s.retry, 0.5))
		s.retry = min(2*s.retry, s.cfg.RetryMax)
		s.log.Debug("snapshot failed; retrying", "err", err, "in", s.retry)
		return
	}
	s.m.snapshots.WithLabelValues("ok").Inc()
	s.needSnapshot, s.retry, s.behindSince = false, s.cfg.RetryMin, time.Time{}
}

func (s *Syncer) applySnapshot(b []byte) error {
	r := &tablev1.SnapshotReply{}
	if len(b) > s.cfg.MaxBytes+64+tablewire.SignatureOverhead {
		return fmt.Errorf("%w: snapshot of %d bytes", tablewire.ErrTooLarge, len(b))
	}
	if err := s.verify(tablewire.ContextSnapshot, tablewire.SignatureField, b); err != nil {
		// A reply from a control node with no table yet is unsigned; it
		// is no answer either way.
		if proto.Unmarshal(b, r) == nil && r.GetTable() == nil && r.GetError() != "" {
			return fmt.Errorf("control node has no table: %s", r.GetError())
		}
		s.unverified("snapshot", err)
		return err
	}
	if err := proto.Unmarshal(b, r); err != nil {
		return fmt.Errorf("%w: %v", tablewire.ErrDecode, err)
	}
	if r.GetTable() == nil {
		return fmt.Errorf("control node has no table: %s", r.GetError())
	}
	t := r.GetTable()
	if err := s.checkCluster(t.GetClusterId()); err != nil {
		s.unverified("snapshot", err)
		return err
	}
	s.st.LastContact = s.cfg.Now()
	if err := tablewire.Validate(t); err != nil {
		s.reject(t.GetRevision(), err)
		return err
	}
	c := cmpTable(t.GetEpoch(), t.GetRevision(), s.cur.GetEpoch(), s.st.Revision)
	if c == 0 && s.st.Source == SourceDisk {
		// The table on disk is the current one: now it is confirmed.
		s.st.Source = SourceControl
		s.synced.Store(true)
		s.publishStatus()
		return nil
	}
	if c <= 0 && s.st.Source != SourceConfig {
		// A lagging control node answered, and the edge never moves
		// back within an epoch. (A control plane restored from backup
		// raises its epoch, and its older table then applies; one
		// rebuilt from nothing is another cluster: its edges refuse it
		// until their table files are removed.)
		return nil
	}
	if err := s.install(t, SourceControl, len(b)); err != nil {
		s.reject(t.GetRevision(), err)
		return err
	}
	return nil
}

// install converts t, hands it to the gateway and, when that succeeds,
// makes it the edge's table and schedules it for the disk. size is t's
// encoded size or an upper bound of it.
func (s *Syncer) install(t *tablev1.RoutingTable, source string, size int) error {
	tab, unusable, err := s.conv.ToTable(t)
	if err != nil {
		return err
	}
	if err := s.cfg.Apply(tab); err != nil {
		return fmt.Errorf("%w: %w", tablewire.ErrInvalid, err)
	}
	if len(unusable) > 0 && !slices.Equal(unusable, s.st.Unusable) {
		s.log.Warn("providers unusable on this edge", "providers", unusable)
	}
	s.installed(t, tab, unusable, source, size)
	return nil
}

// installed makes t, converted to tab and applied, the edge's table, and
// schedules it for the disk.
func (s *Syncer) installed(t *tablev1.RoutingTable, tab *table.Table, unusable []string, source string, size int) {
	s.cur, s.curSize, s.tab, s.ix, s.patches = t, size, tab, nil, 0
	if source == SourceControl {
		s.synced.Store(true)
	}
	s.st.Revision, s.st.Source, s.st.Unusable = t.GetRevision(), source, unusable
	s.st.Epoch, s.st.ClusterID = t.GetEpoch(), t.GetClusterId()
	s.st.RejectedRevision, s.st.RejectedReason = 0, ""
	if source == SourceControl {
		s.st.Unverified = ""
	}
	s.m.applied.WithLabelValues(source).Inc()
	s.m.unusable.Set(float64(len(unusable)))
	if source == SourceControl && s.cfg.CachePath != "" {
		// Encoded by the writer: tables are immutable, and the whole
		// table's encoding stays off the apply path.
		select {
		case <-s.persist:
		default:
		}
		s.persist <- cacheWrite{t.GetRevision(), t}
	}
	s.updateStale()
	s.scheduleReport()
}

// FullEvery is how many deltas in a row an edge patches into its table
// (Config.Patch) before it validates and builds the next one whole.
const FullEvery = 64

// reportDelay is how soon after an applied table the edge reports it:
// a burst of changes makes one report, not one per change and edge.
const reportDelay = 200 * time.Millisecond

// scheduleReport makes the next report come within about reportDelay.
func (s *Syncer) scheduleReport() {
	if s.reportTimer == nil || s.reportSoon {
		return // the loop reports on start anyway
	}
	s.reportSoon = true
	if !s.reportTimer.Stop() {
		select {
		case <-s.reportTimer.C:
		default:
		}
	}
	s.reportTimer.Reset(backoff.Spread(min(reportDelay, s.cfg.ReportInterval), 0.5))
}

// ReadyGap is the least time between two reports that ReportReady
// triggers: a flapping engine sends at most one extra report per gap, and
// the last change always reaches the control plane.
const ReadyGap = 250 * time.Millisecond

// ReportReady tells the control plane, soon, which models this edge
// serves now (Config.ReadyModels): at once, or ReadyGap after the last
// such report when that was more recent. The node calls it whenever its
// local engine loads or drops a model. It never blocks and is safe from
// any goroutine; before Start it does nothing beyond marking a report due.
func (s *Syncer) ReportReady() {
	select {
	case s.ready <- struct{}{}:
	default: // one is pending already; it reads the set when it is sent
	}
}

// reportReady sends a ready report now, or arms the timer that sends it
// once ReadyGap has passed since the last one.
func (s *Syncer) reportReady() {
	if s.readyTimer != nil {
		return // a held-back report is due and will carry this change
	}
	if wait := ReadyGap - time.Since(s.readySent); wait > 0 {
		s.readyTimer = time.NewTimer(wait)
		return
	}
	s.readySent = time.Now()
	s.report()
}

// readyModels is Config.ReadyModels' answer, copied, sorted and without
// repeats.
func (s *Syncer) readyModels() []string {
	if s.cfg.ReadyModels == nil {
		return nil
	}
	return slices.Compact(slices.Sorted(slices.Values(s.cfg.ReadyModels())))
}

// reject records a table the edge refused; the old one stays in use.
func (s *Syncer) reject(rev uint64, err error) {
	s.m.rejected.Inc()
	s.st.RejectedRevision, s.st.RejectedReason = rev, err.Error()
	s.log.Error("routing table rejected; keeping the current one", "revision", rev, "current", s.st.Revision, "err", err)
	s.publishStatus()
	s.report()
}

func (s *Syncer) updateStale() {
	now := s.cfg.Now()
	limit := time.Duration(s.cfg.StaleAfter) * s.hbInterval
	stale := s.st.LastContact.IsZero() || now.Sub(s.st.LastContact) > limit ||
		!s.behindSince.IsZero() && now.Sub(s.behindSince) > limit || s.st.Source != SourceControl
	s.st.Connected = s.nc != nil && s.nc.IsConnected()
	if s.st.Connected {
		server := s.nc.ConnectedUrlRedacted()
		if s.discovered.Swap(false) || server != s.st.Server || s.st.Servers == nil {
			s.st.Servers = s.nc.Servers() // a new slice: Status copies share it, read-only
		}
		s.st.Server = server
	}
	changed := stale != s.st.Stale
	s.st.Stale = stale
	s.m.stale.Set(b2f(stale))
	s.publishStatus()
	if changed {
		if stale {
			s.log.Warn("routing table is stale", "revision", s.st.Revision, "source", s.st.Source)
		} else {
			s.log.Info("routing table is current", "revision", s.st.Revision)
		}
		s.report()
	}
}

func (s *Syncer) publishStatus() {
	if s.behindSince.IsZero() {
		s.behind.Store(0)
	} else {
		s.behind.Store(s.behindSince.UnixNano())
	}
	st := s.st
	st.Unusable = append([]string(nil), s.st.Unusable...)
	s.status.Store(&st)
}

// report tells the control plane what this edge serves.
func (s *Syncer) report() {
	if s.nc == nil {
		return
	}
	b, err := tablewire.Encode(&tablev1.AppliedReport{
		Schema: tablewire.Schema, Node: s.cfg.NodeID, Region: s.cfg.Region, Revision: s.st.Revision,
		Stale: s.st.Stale, RejectedRevision: s.st.RejectedRevision, RejectedReason: s.st.RejectedReason,
		Unusable: s.st.Unusable, IntervalMs: uint32(s.cfg.ReportInterval.Milliseconds()), Source: s.st.Source,
		ReadyModels: s.readyModels(), Epoch: s.st.Epoch, Unverified: s.st.Unverified,
	})
	if err == nil {
		subj := tablewire.SubjectApplied
		if s.cfg.NKey != "" {
			subj = tablewire.ReportSubject(s.cfg.NodeID)
		}
		err = s.nc.Publish(subj, b)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Debug("applied report not sent", "err", err)
	}
}

// cacheWrite is a table for writeCacheLoop, with its revision.
type cacheWrite struct {
	rev uint64
	t   *tablev1.RoutingTable
}

// writeCacheLoop writes the newest table to disk off the apply path; a
// newer table replaces one not yet written.
func (s *Syncer) writeCacheLoop(ctx context.Context) {
	defer s.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-s.persist:
			b, err := tablewire.Encode(w.t)
			if err == nil {
				err = writeCache(s.cfg.CachePath, b)
			}
			if err != nil {
				s.m.cacheErrors.Inc()
				s.log.Warn("writing the table to disk failed", "err", err)
				continue
			}
			s.cached.Store(w.rev)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Conn returns the edge's connection to the control bus once Start has
// run, nil before: the edge's other traffic on the bus (usage records,
// limit reports) shares it, with its identity and inbox prefix.
func (s *Syncer) Conn() *nats.Conn { return s.nc }
