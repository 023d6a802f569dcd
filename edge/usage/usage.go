// Package usage delivers the edge's usage records (usagev1.Record, one
// per request this node served) to the control plane over NATS
// JetStream, and counts spend and tokens by tenant and model on the
// node's /metrics.
//
// A request hands its record to Record, which writes its frame into the
// journal (a memory-mapped file, see journal.go: no syscall, and it
// survives a SIGKILL of the edge) and appends it to a bounded queue: one
// goroutine (the spooler) drains the queue every Flush interval, or at
// once when a batch is waiting, so the bus and the disk stay off the
// request's path and a request never pays for waking anyone. The
// spooler appends each batch to the spool (an append-only
// file of length-prefixed, CRC-32C-checked frames under the edge's data
// dir, synced once per batch); a second goroutine (the publisher) sends
// spooled records on usagewire.UsageSubject(node) with their request ID
// as JetStream message ID (PublishMsgAsync, a batch in flight at once)
// and waits for the acks, so a slow bus never holds up the spool. Once
// everything in the spool is acknowledged the spool is emptied. While the bus is away records stay
// in the spool and are retried with backoff; on start, whatever the
// spool holds is sent again, so an edge restart loses nothing spooled. A
// graceful stop spools the queue first; a SIGKILL or crash leaves the
// last Flush's records in the journal, which the next start moves to the
// spool. What the journal does not cover is the machine itself dying
// within a Flush of a request's end (the page cache is not synced until
// the spooler's batch), and a journal segment that filled because the
// disk stalled (those records wait in memory; Stats says how many). A record
// sent twice (acked, but the spool not yet emptied when the edge died)
// is dropped by JetStream's duplicate window and again by the control
// plane's aggregation, both by request ID.
//
// A corrupt spool tail (a torn write) is cut off with a warning; the
// records before it are kept. The package never crashes on its spool.
//
// A full queue makes Record wait rather than drop a record: it fills
// only when the disk stalls, and a record lost is spend lost.
package usage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/usagewire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Schema is the usagev1.Record schema this package writes.
const Schema = 1

// SpoolFile is the spool's name inside Config.Dir.
const SpoolFile = "usage.spool"

// Config configures a Recorder.
type Config struct {
	// Node is this edge's node ID: the subject it publishes on.
	Node string
	// Dir is the folder the spool lives in; created 0700 if missing.
	Dir string
	// QueueSize bounds the records waiting to be spooled. Default 8192.
	QueueSize int
	// Flush is how often queued records are spooled and sent when fewer
	// than a batch are waiting. Default 10ms.
	Flush time.Duration
	// JournalBytes is the size of each of the journal's two segments:
	// room for the records of one Flush interval. Default 4 MiB (about
	// 15,000 records).
	JournalBytes int
	// Batch is the most records spooled with one sync and published
	// before waiting for their acks. Default 256.
	Batch int
	// AckTimeout bounds the wait for a batch's acks. Default 5s.
	AckTimeout time.Duration
	// Retry is the backoff between attempts while the bus is away.
	// Default 100ms doubling to 5s.
	Retry backoff.Policy
	// Logger receives spool and bus problems. Nil means slog.Default.
	Logger *slog.Logger
	// Registerer receives the spend and token counters; nil skips them.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the settings used where nothing is set.
func DefaultConfig() Config {
	return Config{QueueSize: 8192, Batch: 256, JournalBytes: 4 << 20, Flush: 10 * time.Millisecond, AckTimeout: 5 * time.Second,
		Retry: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}}
}

// Validate checks c.
func (c *Config) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("usage: node is required")
	case c.Dir == "":
		return errors.New("usage: spool dir is required")
	case c.QueueSize < 1 || c.Batch < 1:
		return fmt.Errorf("usage: queue size and batch must be positive, got %d and %d", c.QueueSize, c.Batch)
	case c.JournalBytes < 4096:
		return fmt.Errorf("usage: journal segment must be at least 4096 bytes, got %d", c.JournalBytes)
	case c.Flush <= 0:
		return fmt.Errorf("usage: flush interval must be positive, got %v", c.Flush)
	case c.AckTimeout <= 0:
		return fmt.Errorf("usage: ack timeout must be positive, got %v", c.AckTimeout)
	}
	return nil
}

// Labels are a record's metric labels, bounded by the caller: the
// tenant as the table lists it ("none" otherwise), the model as the
// table names it, the target kind that served it (local, peer, provider,
// cache) and the region of the node that served it (this node's).
type Labels struct{ Tenant, Model, Kind, Region string }

// Recorder queues, spools and publishes usage records.
type Recorder struct {
	cfg Config
	log *slog.Logger

	qmu sync.Mutex // guards queued, journal writes, loose and ending; taken by Record
	// queued counts the records written since the spooler last took them.
	queued int
	j      *journal
	// loose holds the frames of queued records the journal had no room
	// for, in memory alone.
	loose  []byte
	room   *sync.Cond // signalled when the spooler takes the queue
	ending bool
	sp     *spool
	// unjournaled counts records that were in memory alone until spooled.
	unjournaled uint64
	// epoch names this run of the recorder; seq numbers its records,
	// from 1 with no gaps (usagev1.Record's epoch and seq).
	epoch, seq uint64
	subj       string

	cost   *prometheus.CounterVec
	tokens *prometheus.CounterVec
	// requests counts records by the same labels as cost.
	requests *prometheus.CounterVec
	series   sync.Map // Labels → *counters

	mu      sync.Mutex // guards the spool, pending, js, nc and spoolOnly
	pending []pend
	js      jetstream.JetStream
	nc      *nats.Conn
	// spoolOnly keeps records in the spool alone: there is no bus.
	spoolOnly bool

	kick    chan struct{} // to the spooler: a batch waits
	pubKick chan struct{} // to the publisher: records were spooled
	started chan struct{} // to the publisher: a bus was given
	spooled chan struct{} // closed once the spooler's last batch is in
	stop    chan struct{}
	done    chan struct{}
	closed  sync.Once
}

// New opens the spool and loads what it holds; those records are sent
// first once Start gives a bus.
func New(cfg Config) (*Recorder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("usage: spool dir: %w", err)
	}
	sp, payloads, cut, err := openSpool(filepath.Join(cfg.Dir, SpoolFile))
	if err != nil {
		return nil, err
	}
	j, held, err := openJournal(filepath.Join(cfg.Dir, JournalFile), cfg.JournalBytes)
	if err != nil {
		sp.close()
		return nil, err
	}
	// What the journal held is what a killed edge had not spooled yet
	// (or had, if it died between the spool's sync and the journal's
	// zeroing): the spool takes the records it lacks before the journal
	// is emptied.
	if len(held) > 0 {
		moved, err := adoptJournal(sp, payloads, held)
		if err != nil {
			j.close()
			sp.close()
			return nil, err
		}
		payloads = append(payloads, moved...)
		cfg.Logger.Info("usage: records recovered from the journal", "records", len(moved))
	}
	j.reset()
	r := &Recorder{
		cfg: cfg, log: cfg.Logger, sp: sp, j: j, epoch: newEpoch(),
		subj: usagewire.UsageSubject(cfg.Node),
		kick: make(chan struct{}, 1), pubKick: make(chan struct{}, 1), started: make(chan struct{}, 1), spooled: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	r.room = sync.NewCond(&r.qmu)
	if cut != nil {
		r.log.Warn("usage: spool had a corrupt tail; cut it off", "kept", len(payloads), "err", cut)
	}
	for _, p := range payloads {
		pd, err := pendOf(p)
		if err != nil {
			r.log.Warn("usage: spooled record undecodable; skipped", "err", err)
			continue
		}
		r.pending = append(r.pending, pd)
	}
	if len(r.pending) > 0 {
		r.log.Info("usage: records from the spool to send", "records", len(r.pending))
	}
	r.cost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_cost_usd_total", Help: "Spend of the requests this node served, USD, by tenant, model, target kind and region.",
	}, []string{"tenant", "model", "kind", "region"})
	r.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_tenant_tokens_total", Help: "Tokens of the requests this node served by tenant, model, target kind, region and direction (in = prompt, out = completion).",
	}, []string{"tenant", "model", "kind", "region", "direction"})
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_tenant_requests_total", Help: "Requests this node served (one per usage record) by tenant, model, target kind and region.",
	}, []string{"tenant", "model", "kind", "region"})
	if reg := cfg.Registerer; reg != nil {
		reg.MustRegister(r.cost, r.tokens, r.requests)
	}
	go r.run()
	return r, nil
}

// Record queues rec for delivery and counts it on /metrics. It returns
// at once unless the queue is full. rec is encoded before Record
// returns and not kept: the caller may reuse it.
func (r *Recorder) Record(rec *usagev1.Record, l Labels) {
	rec.Schema = Schema
	c := r.countersOf(l)
	c.requests.Inc()
	if rec.CostNanoUsd > 0 {
		c.cost.Add(float64(rec.CostNanoUsd) / usagewire.NanoPerUSD)
	}
	if rec.TokensIn > 0 {
		c.in.Add(float64(rec.TokensIn))
	}
	if rec.TokensOut > 0 {
		c.out.Add(float64(rec.TokensOut))
	}
	r.qmu.Lock()
	for r.queued >= r.cfg.QueueSize && !r.ending {
		r.kickNow()
		r.room.Wait()
	}
	if r.ending {
		r.qmu.Unlock()
		r.log.Error("usage: record after close dropped", "request_id", rec.GetRequestId())
		return
	}
	r.seq++
	rec.Epoch, rec.Seq = r.epoch, r.seq
	if err := r.j.append(rec); err != nil {
		r.loose = appendRecordFrame(r.loose, rec)
		r.unjournaled++
	}
	r.queued++
	n := r.queued
	r.qmu.Unlock()
	if n == r.cfg.Batch {
		r.kickNow() // a whole batch waits: no need to wait for the tick
	}
}

// newEpoch returns a random, non-zero run epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if e := binary.LittleEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// counters are one label set's series, kept so a record costs no label
// hashing; label sets are bounded by the table's tenants and models.
type counters struct{ cost, in, out, requests prometheus.Counter }

func (r *Recorder) countersOf(l Labels) *counters {
	if v, ok := r.series.Load(l); ok {
		return v.(*counters)
	}
	c := &counters{cost: r.cost.WithLabelValues(l.Tenant, l.Model, l.Kind, l.Region),
		in:       r.tokens.WithLabelValues(l.Tenant, l.Model, l.Kind, l.Region, "in"),
		out:      r.tokens.WithLabelValues(l.Tenant, l.Model, l.Kind, l.Region, "out"),
		requests: r.requests.WithLabelValues(l.Tenant, l.Model, l.Kind, l.Region)}
	v, _ := r.series.LoadOrStore(l, c)
	return v.(*counters)
}

func (r *Recorder) kickNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// take empties the queue. It returns the journal segment that holds
// the queued records' frames (sealed: Record writes to the other one
// from now on) and the frames of those the journal had no room for
// (loose, swapped with spare).
func (r *Recorder) take(spare []byte, stopping bool) (sealed int, loose []byte) {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	loose, r.loose = r.loose, spare[:0]
	r.queued = 0
	sealed = r.j.swap()
	if stopping {
		r.ending = true
	}
	r.room.Broadcast()
	return sealed, loose
}

// Stats are the recorder's counters.
type Stats struct {
	// Unjournaled is how many records were held in memory alone until
	// spooled, because a journal segment was full: a SIGKILL in that
	// time would have lost them.
	Unjournaled uint64
}

// Stats returns the recorder's counters.
func (r *Recorder) Stats() Stats {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	return Stats{Unjournaled: r.unjournaled}
}

// Start publishes over nc from now on. The bus may be away; records
// wait in the spool until it is back. A nil nc makes the spool the
// edge's usage log: a standalone edge keeps every record there (read it
// with ReadSpool) and holds none in memory.
func (r *Recorder) Start(nc *nats.Conn) error {
	if nc == nil {
		r.mu.Lock()
		r.spoolOnly = true // run drops what it held in memory
		r.mu.Unlock()
		return nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("usage: jetstream: %w", err)
	}
	r.mu.Lock()
	r.js, r.nc = js, nc
	r.mu.Unlock()
	select {
	case r.started <- struct{}{}:
	default:
	}
	return nil
}

// Pending returns how many records wait for an ack, queued ones included.
func (r *Recorder) Pending() int {
	r.qmu.Lock()
	q := r.queued
	r.qmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending) + q
}

// Close spools what is queued, makes one last attempt to publish within
// the ack timeout, and closes the spool. Records not acknowledged stay
// in it for the next start.
func (r *Recorder) Close() {
	r.closed.Do(func() {
		close(r.stop)
		<-r.done
	})
}

// run spools: every Flush, or at once when a batch waits, it appends
// the queued records to the spool and hands them to publishLoop. The
// spool and pending change together under mu, so the publisher empties
// the spool only when everything in it was acknowledged. A slow bus
// never holds up the spool, and so never the queue or a request.
func (r *Recorder) run() {
	defer close(r.done)
	pubDone := make(chan struct{})
	go r.publishLoop(pubDone)
	var loose []byte
	tick := time.NewTicker(r.cfg.Flush)
	defer tick.Stop()
	for {
		stopping := false
		select {
		case <-tick.C:
		case <-r.kick:
		case <-r.stop:
			stopping = true
		}
		sealed, taken := r.take(loose, stopping)
		loose = taken
		if frames := r.j.frames(sealed); len(frames)+len(loose) > 0 {
			// The frames go to the spool as they are, then become the
			// pending records, out of the segment before it is zeroed.
			r.mu.Lock()
			err := r.sp.write(frames, loose)
			var batch []pend
			if !r.spoolOnly {
				batch = pendsOf(append(append(make([]byte, 0, len(frames)+len(loose)), frames...), loose...))
				r.pending = append(r.pending, batch...)
			}
			r.mu.Unlock()
			// Synced (or failed, and logged): either way the segment is
			// emptied for the next swap. After a failed sync the records
			// are still pending in memory and go out if the bus takes
			// them; only a restart before then loses them.
			r.j.zero(sealed)
			if err != nil {
				r.log.Error("usage: spool write failed", "records", len(batch), "err", err)
			}
			select {
			case r.pubKick <- struct{}{}:
			default:
			}
		}
		if stopping {
			close(r.spooled)
			<-pubDone // its last attempt
			r.sp.close()
			r.j.close()
			return
		}
	}
}

// publishLoop sends pending records whenever the spooler hands some
// over, backing off while the bus does not take them: a bus that is
// away is not asked again until the retry is due.
func (r *Recorder) publishLoop(done chan<- struct{}) {
	defer close(done)
	var retry <-chan time.Time
	attempt := 0
	for {
		final, due := false, retry == nil
		select {
		case <-r.pubKick:
		case <-retry:
			due = true
		case <-r.started:
			due = true
		case <-r.spooled:
			final, due = true, true
		}
		if due {
			if r.publish() {
				attempt, retry = 0, nil
			} else {
				retry = time.After(r.cfg.Retry.Delay(attempt))
				attempt++
			}
		}
		if final {
			return
		}
	}
}

// publish sends every pending record in batches and drops the acked
// ones; it empties the spool once nothing is pending. It reports
// whether nothing is left.
func (r *Recorder) publish() bool {
	r.mu.Lock()
	js, nc, spoolOnly := r.js, r.nc, r.spoolOnly
	if spoolOnly {
		r.pending = nil // the spool holds them
	}
	n := len(r.pending)
	r.mu.Unlock()
	if n == 0 || spoolOnly {
		return true
	}
	if js == nil || !nc.IsConnected() {
		return false
	}
	for {
		r.mu.Lock()
		n := min(len(r.pending), r.cfg.Batch)
		if n == 0 {
			err := r.sp.reset()
			r.mu.Unlock()
			if err != nil {
				r.log.Error("usage: spool reset failed", "err", err)
			}
			return true
		}
		// The spooler only appends, so the first n stay put while
		// they are sent.
		recs := r.pending[:n:n]
		r.mu.Unlock()
		acked, err := r.send(js, recs)
		r.mu.Lock()
		// Acked records leave; the rest keep their order.
		kept := r.pending[:0]
		for i, rec := range r.pending[:n] {
			if !acked[i] {
				kept = append(kept, rec)
			}
		}
		r.pending = append(kept, r.pending[n:]...)
		left := len(r.pending)
		r.mu.Unlock()
		if err != nil {
			r.log.Debug("usage: bus not taking records; kept in the spool", "pending", left, "err", err)
			return false
		}
	}
}

// send publishes recs and waits for their acks; acked[i] says which
// arrived.
func (r *Recorder) send(js jetstream.JetStream, recs []pend) (acked []bool, err error) {
	acked = make([]bool, len(recs))
	futs := make([]jetstream.PubAckFuture, 0, len(recs))
	for _, rec := range recs {
		msg := &nats.Msg{Subject: r.subj, Data: rec.payload}
		f, perr := js.PublishMsgAsync(msg, jetstream.WithMsgID(rec.id))
		if perr != nil {
			err = perr
			break
		}
		futs = append(futs, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.AckTimeout)
	defer cancel()
	for i, f := range futs {
		select {
		case <-f.Ok():
			acked[i] = true
		case e := <-f.Err():
			if err == nil {
				err = e
			}
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("usage: no ack within %v", r.cfg.AckTimeout)
			}
			return acked, err
		}
	}
	return acked, err
}

// ReadSpool returns the records in the spool file at path, and
// ErrCorrupt (wrapped) when bytes past the last whole record were
// ignored.
func ReadSpool(path string) ([]*usagev1.Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	payloads, _, cut := readFrames(data)
	recs := make([]*usagev1.Record, 0, len(payloads))
	for _, p := range payloads {
		rec := &usagev1.Record{}
		if err := proto.Unmarshal(p, rec); err != nil {
			return recs, fmt.Errorf("usage: spooled record: %w", err)
		}
		recs = append(recs, rec)
	}
	return recs, cut
}
