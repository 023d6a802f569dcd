// Package usage turns the usage records edges publish to JetStream into
// the control plane's replicated spend: on the Raft leader, one durable
// pull consumer reads the records and proposes them through Raft in
// batches (control/fsm TypeUsageBatch), and acknowledges them only once
// the batch applied. It also serves the totals (Query, the API's
// GET /v1/control/usage) and exports them to Prometheus.
//
// Records are counted exactly once by two layers: JetStream drops a
// re-sent record inside its duplicate window (Nats-Msg-Id = request_id),
// and the state machine drops a record it already applied, which covers
// redelivery after a leader change and records re-sent from an edge's
// spool later than the window. It knows a record by its edge run and
// seq (usagev1.Record's epoch and seq: a few words per edge process,
// whatever the request rate), or by request ID for a record without
// them.
//
// It must never write to Raft once per record, never acknowledge a record
// before its batch applied, and never let one malformed record stop a
// batch: such a record is counted and dropped.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// Consumer is the durable consumer's name: every leader resumes it.
const Consumer = "meridian-control-usage"

// Node is the control node's Raft member (*cluster.Node).
type Node interface {
	FSM() *fsm.FSM
	IsLeader() bool
	Apply(t fsm.Type, msg proto.Message) (*controlv1.Result, error)
}

// Config configures an Aggregator.
type Config struct {
	// Conn is the control node's NATS connection (full permissions).
	Conn *nats.Conn
	// Node proposes batches; only its leader aggregates.
	Node Node
	// Replicas is the stream's replica count: min(3, JetStream's
	// servers). Default 1.
	Replicas int
	// BatchSize is the most records one Raft command carries. Default
	// 1000, at most fsm.MaxUsageBatch.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill
	// before it is proposed anyway. Default 300 ms.
	FlushInterval time.Duration
	// AckWait is how long JetStream waits for a batch's acknowledgement
	// before it redelivers its records (to this or the next leader).
	// Default 10 s.
	AckWait time.Duration
	// MaxAge is how long the stream keeps records, applied or not.
	// Default 7 days.
	MaxAge time.Duration
	// Now is the clock batches are stamped with. Default time.Now.
	Now func() time.Time
	// Logger receives logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the aggregator's metrics and the spend
	// collector; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults; Conn and Node must be set.
func DefaultConfig() Config {
	return Config{Replicas: 1, BatchSize: 1000, FlushInterval: 300 * time.Millisecond, AckWait: 10 * time.Second,
		MaxAge: 7 * 24 * time.Hour, Now: time.Now, Logger: slog.Default()}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Conn == nil || c.Node == nil {
		errs = append(errs, errors.New("usage: a NATS connection and a node are required"))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, errors.New("usage: replicas must be 1 to 5"))
	}
	if c.BatchSize < 1 || c.BatchSize > fsm.MaxUsageBatch {
		errs = append(errs, fmt.Errorf("usage: batch size must be 1 to %d", fsm.MaxUsageBatch))
	}
	if c.FlushInterval <= 0 || c.AckWait <= c.FlushInterval || c.MaxAge < 2*usagewire.DuplicateWindow {
		errs = append(errs, errors.New("usage: flush interval must be positive, ack wait above it, max age at least twice the duplicate window"))
	}
	if c.Now == nil || c.Logger == nil {
		errs = append(errs, errors.New("usage: clock and logger are required"))
	}
	return errors.Join(errs...)
}

// StreamConfig is the usage stream: every edge's records, on disk,
// replicated, deduplicated by message ID.
func StreamConfig(replicas int, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        usagewire.Stream,
		Description: "Meridian usage records, one per served request",
		Subjects:    []string{usagewire.UsageSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		Duplicates:  usagewire.DuplicateWindow,
		MaxAge:      maxAge,
		Discard:     jetstream.DiscardOld,
	}
}

// Stats counts what the aggregator did since it started.
type Stats struct {
	// Batches is how many usage batches it proposed (Raft writes).
	Batches uint64
	// Applied, Duplicate and Malformed count records by outcome.
	Applied, Duplicate, Malformed uint64
}

// Aggregator is one control node's usage aggregation; it works while the
// node leads.
type Aggregator struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	batches, applied, duplicate, malformed atomic.Uint64
}

// New returns an aggregator; Run runs it.
func New(cfg Config) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Aggregator{cfg: cfg, log: cfg.Logger.With("component", "usage")}
	a.m = newMetrics(cfg.Registerer, cfg.Node.FSM())
	return a, nil
}

// Stats returns the counts so far.
func (a *Aggregator) Stats() Stats {
	return Stats{Batches: a.batches.Load(), Applied: a.applied.Load(), Duplicate: a.duplicate.Load(), Malformed: a.malformed.Load()}
}

// Run aggregates while the node leads, until ctx ends.
func (a *Aggregator) Run(ctx context.Context) error {
	fails := 0
	for ctx.Err() == nil {
		if !a.cfg.Node.IsLeader() {
			fails = 0
			sleep(ctx, backoff.Between(100*time.Millisecond, 200*time.Millisecond))
			continue
		}
		if err := a.lead(ctx); err != nil && ctx.Err() == nil {
			fails++
			if fails%10 == 1 {
				a.log.Warn("usage aggregation interrupted; retrying", "err", err)
			}
			sleep(ctx, retry.Delay(fails-1))
		}
	}
	return nil
}

// retry is the wait after the fails-th interrupted aggregation in a row.
var retry = backoff.Policy{Base: 250 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// lead ensures the stream and consumer, then proposes batches until the
// node stops leading or something fails.
func (a *Aggregator) lead(ctx context.Context) error {
	js, err := jetstream.New(a.cfg.Conn)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Idempotent: every leader ensures the same stream and consumer.
	if _, err := js.CreateOrUpdateStream(cctx, StreamConfig(a.cfg.Replicas, a.cfg.MaxAge)); err != nil {
		return fmt.Errorf("usage stream: %w", err)
	}
	cons, err := js.CreateOrUpdateConsumer(cctx, usagewire.Stream, jetstream.ConsumerConfig{
		Durable: Consumer, Description: "the control plane's usage aggregation (Raft leader)",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: a.cfg.AckWait, MaxDeliver: -1,
		MaxAckPending: 4 * fsm.MaxUsageBatch, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("usage consumer: %w", err)
	}
	for ctx.Err() == nil && a.cfg.Node.IsLeader() {
		if err := a.step(ctx, cons); err != nil {
			return err
		}
	}
	return nil
}

// step fetches up to one batch and proposes it.
func (a *Aggregator) step(ctx context.Context, cons jetstream.Consumer) error {
	mb, err := cons.Fetch(a.cfg.BatchSize, jetstream.FetchMaxWait(a.cfg.FlushInterval))
	if err != nil {
		return fmt.Errorf("usage fetch: %w", err)
	}
	var msgs []jetstream.Msg
	batch := &controlv1.UsageBatch{}
	for msg := range mb.Messages() {
		rec, err := Decode(msg.Subject(), msg.Data())
		if err != nil {
			if stub := RunStub(msg.Subject(), msg.Data()); stub != nil {
				// Proposed with only its run and seq, so the state
				// machine uses its number up; it counts it malformed.
				a.log.Warn("dropping a malformed usage record", "subject", msg.Subject(), "err", err)
				msgs = append(msgs, msg)
				batch.Records = append(batch.Records, stub)
				continue
			}
			// Never redelivered: it would fail the same way.
			a.malformed.Add(1)
			a.m.records.WithLabelValues("malformed").Inc()
			a.log.Warn("dropping a malformed usage record", "subject", msg.Subject(), "err", err)
			msg.Term()
			continue
		}
		msgs = append(msgs, msg)
		batch.Records = append(batch.Records, rec)
	}
	if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		a.log.Debug("usage fetch ended early", "err", err)
	}
	now := a.cfg.Now()
	if len(batch.Records) == 0 {
		// No traffic: still end an exhaustion whose period is over, or
		// follow a changed budget, without waiting for a record.
		if !a.cfg.Node.FSM().State().BudgetsStale(now.UnixMilli()) {
			return nil
		}
	}
	batch.NowUnixMs = now.UnixMilli()
	res, err := a.propose(batch)
	if err != nil {
		// Not acknowledged: JetStream redelivers them after AckWait, to
		// this node or the next leader, and the state machine drops any
		// that did apply.
		return err
	}
	for _, msg := range msgs {
		msg.Ack()
	}
	a.batches.Add(1)
	a.applied.Add(uint64(res.Applied))
	a.duplicate.Add(uint64(res.Duplicate))
	a.malformed.Add(uint64(res.Malformed))
	a.m.batches.Inc()
	a.m.records.WithLabelValues("applied").Add(float64(res.Applied))
	a.m.records.WithLabelValues("duplicate").Add(float64(res.Duplicate))
	a.m.records.WithLabelValues("malformed").Add(float64(res.Malformed))
	return nil
}

// propose applies a batch through Raft. An unknown outcome is retried
// with the same batch, which the state machine's dedup makes safe.
func (a *Aggregator) propose(b *controlv1.UsageBatch) (fsm.UsageResult, error) {
	var err error
	for range 3 {
		var res *controlv1.Result
		res, err = a.cfg.Node.Apply(fsm.TypeUsageBatch, b)
		if err != nil {
			if !a.cfg.Node.IsLeader() {
				return fsm.UsageResult{}, fmt.Errorf("usage batch: %w", err)
			}
			continue
		}
		if res.GetCode() != "" {
			return fsm.UsageResult{}, fmt.Errorf("usage batch refused: %s: %s", res.GetCode(), res.GetMessage())
		}
		r, _ := fsm.ParseUsageResult(res.GetMessage())
		return r, nil
	}
	return fsm.UsageResult{}, fmt.Errorf("usage batch: %w", err)
}

// maxRecordBytes bounds a record's encoding; a real one is a few hundred
// bytes.
const maxRecordBytes = 64 << 10

// Decode reads one usage record from an edge: a usagev1.Record published
// on the serving node's usage subject. It checks what the totals rely on
// and returns the part they keep.
func Decode(subject string, data []byte) (*controlv1.UsageRecord, error) {
	if len(data) > maxRecordBytes {
		return nil, fmt.Errorf("record of %d bytes is over %d", len(data), maxRecordBytes)
	}
	var r usagev1.Record
	if err := proto.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	// Compared through UsageSubject, so that however it spells a node
	// in a subject, a record travels only on its own node's.
	if r.GetNode() == "" || usagewire.UsageSubject(r.GetNode()) != subject {
		return nil, fmt.Errorf("record of node %q published on %q: a record travels on its serving node's subject", r.GetNode(), subject)
	}
	if r.GetCostNanoUsd() < 0 {
		return nil, errors.New("negative cost")
	}
	rec := &controlv1.UsageRecord{
		RequestId: r.GetRequestId(), Tenant: r.GetTenant(), Key: r.GetKey(), Model: r.GetModel(),
		TokensIn: r.GetTokensIn(), TokensOut: r.GetTokensOut(), CostNanoUsd: r.GetCostNanoUsd(), UnixMs: r.GetUnixMs(),
		Node: r.GetNode(), Epoch: r.GetEpoch(), Seq: r.GetSeq(),
	}
	if err := fsm.CheckUsageRecord(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// RunStub returns, for a record Decode refuses, a record holding only
// its node, run and seq, when it has them and travelled on its own
// node's subject; else nil. The state machine counts the stub as
// malformed and uses up its seq, so the run's numbers still close.
func RunStub(subject string, data []byte) *controlv1.UsageRecord {
	if len(data) > maxRecordBytes {
		return nil
	}
	var r usagev1.Record
	if proto.Unmarshal(data, &r) != nil || r.GetNode() == "" || usagewire.UsageSubject(r.GetNode()) != subject ||
		r.GetEpoch() == 0 || r.GetSeq() == 0 {
		return nil
	}
	return &controlv1.UsageRecord{Node: r.GetNode(), Epoch: r.GetEpoch(), Seq: r.GetSeq()}
}
