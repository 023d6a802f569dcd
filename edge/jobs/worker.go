package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/nats-io/nats.go/jetstream"
)

// lane is one model's consumer, as the last look at the stream saw it.
type lane struct {
	model   string
	cons    jetstream.Consumer
	pending uint64
}

// lanes is what the workers choose from.
type lanes struct {
	mu    sync.Mutex
	all   map[string]*lane // by consumer name
	turn  int
	wake  chan struct{} // closed and replaced when lanes are refreshed
	local func() []string
}

// pick returns a lane with lines waiting: one of a local model's when
// any has, else any, taking turns so that no model starves another.
func (l *lanes) pick() (*lane, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	local := map[string]bool{}
	if l.local != nil {
		for _, m := range l.local() {
			local[m] = true
		}
	}
	var near, far []*lane
	for _, ln := range l.all {
		if ln.pending == 0 {
			continue
		}
		if local[ln.model] {
			near = append(near, ln)
		} else {
			far = append(far, ln)
		}
	}
	l.turn++
	for _, set := range [][]*lane{near, far} {
		if len(set) > 0 {
			return set[l.turn%len(set)], l.wake
		}
	}
	return nil, l.wake
}

func (l *lanes) drained(ln *lane) {
	l.mu.Lock()
	ln.pending = 0
	l.mu.Unlock()
}

// refresh lists the stream's consumers and their pending lines.
func (s *Service) refresh(ctx context.Context, b *bus, l *lanes) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lister := b.stream.ListConsumers(ctx)
	seen := map[string]*jetstream.ConsumerInfo{}
	for info := range lister.Info() {
		if info.Name != jobswire.HooksConsumer {
			seen[info.Name] = info
		}
	}
	if err := lister.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, info := range seen {
		ln, ok := l.all[name]
		if !ok {
			c, err := b.stream.Consumer(ctx, name)
			if err != nil {
				continue
			}
			ln = &lane{model: info.Config.Metadata[jobswire.ConsumerModelKey], cons: c}
			l.all[name] = ln
		}
		// Lines another worker holds count too: they come back to
		// whoever pulls once that worker misses its AckWait.
		ln.pending = info.NumPending + uint64(info.NumAckPending)
	}
	for name := range l.all {
		if seen[name] == nil {
			delete(l.all, name)
		}
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return nil
}

// runWorkers runs Workers line runners and the lane refresher until ctx
// ends.
func (s *Service) runWorkers(ctx context.Context) {
	b := s.bus()
	l := &lanes{all: map[string]*lane{}, wake: make(chan struct{}), local: s.cfg.LocalModels}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if err := s.refresh(ctx, b, l); err != nil && ctx.Err() == nil {
				s.log.Debug("listing batch consumers", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff.Spread(s.cfg.Poll, 0.2)):
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.deliverHooks(ctx, b)
	}()
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx, b, l)
		}()
	}
	wg.Wait()
}

// yieldPause is how long a worker waits before looking again while
// interactive traffic is waiting for the local engine.
const yieldPause = 20 * time.Millisecond

func (s *Service) work(ctx context.Context, b *bus, l *lanes) {
	for ctx.Err() == nil {
		ln, wake := l.pick()
		if ln == nil {
			select {
			case <-ctx.Done():
			case <-wake:
			}
			continue
		}
		if s.cfg.Busy != nil && s.cfg.Busy(ln.model) {
			select {
			case <-ctx.Done():
			case <-time.After(yieldPause):
			}
			continue
		}
		msg, err := ln.cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) {
				l.drained(ln)
			} else if ctx.Err() == nil {
				s.log.Debug("pulling a batch line", "model", ln.model, "err", err)
				l.drained(ln)
			}
			continue
		}
		s.handle(ctx, b, msg)
	}
}

// handle runs one line and stores its result before acknowledging it.
func (s *Service) handle(ctx context.Context, b *bus, msg jetstream.Msg) {
	var j job
	if err := json.Unmarshal(msg.Data(), &j); err != nil || j.Batch == "" || j.Key == "" || j.CustomID == "" {
		s.log.Warn("dropping a malformed batch line", "subject", msg.Subject(), "err", err)
		msg.Term()
		return
	}
	delivered := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	bctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rk := resultKey(j.Batch, j.CustomID)
	if _, err := b.results.Get(bctx, rk); err == nil {
		// Stored by an earlier delivery that died before its ack.
		s.settle(bctx, b, j.Key)
		msg.Ack()
		return
	}
	rec, _, err := b.record(bctx, j.Key)
	if err != nil {
		msg.NakWithDelay(time.Second)
		return
	}
	if rec == nil || rec.Batch.Status != StatusInProgress && rec.Batch.Status != StatusValidating {
		msg.Ack() // cancelled, expired or gone: the line is not run
		return
	}
	if s.now().UnixNano() > rec.Deadline {
		if err := s.finalize(bctx, b, j.Key, StatusExpired); err != nil {
			s.log.Warn("expiring batch", "batch", j.Batch, "err", err)
		}
		msg.Ack()
		return
	}
	out, ok, retry, preempted := s.run(ctx, msg, j)
	if ctx.Err() != nil {
		msg.Nak() // stopping: another worker runs it
		return
	}
	if preempted {
		s.requeue(bctx, b, msg, j)
		return
	}
	if retry && delivered < uint64(s.cfg.MaxDeliver) {
		msg.NakWithDelay(s.cfg.Retry.Delay(int(delivered) - 1))
		return
	}
	_, err = b.results.Create(bctx, rk, mustJSON(result{Index: j.Index, OK: ok, Line: mustJSON(out)}))
	switch {
	case err == nil:
		s.count(bctx, b, j.Key, ok)
	case errors.Is(err, jetstream.ErrKeyExists):
		// Another delivery stored it first: this run's answer is dropped.
	default:
		s.log.Warn("storing a batch line's result", "batch", j.Batch, "err", err)
		msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(bctx); err != nil {
		s.log.Debug("acknowledging a batch line", "batch", j.Batch, "err", err)
	}
}

// run serves the line through the node's own handler, as the batch's
// key, extending the line's AckWait while it runs. retry reports an
// answer worth another try (429 or 5xx).
func (s *Service) run(ctx context.Context, msg jetstream.Msg, j job) (out OutputLine, ok, retry, preempted bool) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var yielded atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(s.cfg.AckWait / 3)
		defer t.Stop()
		var check <-chan time.Time
		if s.cfg.Preempt != nil {
			pt := time.NewTicker(s.cfg.PreemptCheck)
			defer pt.Stop()
			check = pt.C
		}
		for {
			select {
			case <-done:
				return
			case <-t.C:
				msg.InProgress()
			case <-check:
				if s.cfg.Preempt(j.Model) {
					yielded.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	rid := requestID(j.Batch, j.CustomID)
	rctx := api.WithBatch(lctx)
	if j.KeyHash != "" {
		rctx = api.WithKeyHash(rctx, j.KeyHash)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, j.URL, bytes.NewReader(j.Body))
	if err != nil {
		return OutputLine{ID: rid, CustomID: j.CustomID, Error: &OutputError{Code: "invalid_request", Message: "The line's url cannot be requested."}}, false, false, false
	}
	for k, v := range j.Header {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(api.HeaderRequestID, rid)
	req.RemoteAddr = "127.0.0.1:0"
	rw := &recorder{h: http.Header{}}
	s.running.Add(1)
	s.cfg.Run.ServeHTTP(rw, req)
	s.running.Add(-1)
	if rw.code == 0 {
		rw.code = http.StatusOK
	}
	body := bytes.TrimSpace(rw.body.Bytes())
	if !json.Valid(body) {
		body = mustJSON(string(body))
	}
	if id := rw.h.Get(api.HeaderRequestID); id != "" {
		rid = id
	}
	ok = rw.code >= 200 && rw.code < 300
	retry = rw.code == http.StatusTooManyRequests || rw.code >= 500
	// A line preempted before it finished runs again; one that finished
	// anyway keeps its answer.
	preempted = yielded.Load() && !ok
	return OutputLine{ID: requestID(j.Batch, j.CustomID), CustomID: j.CustomID,
		Response: &LineResult{StatusCode: rw.code, RequestID: rid, Body: body}}, ok, retry, preempted
}

// requeuePause is how long a preempted line waits before it is handed
// out again.
const requeuePause = 200 * time.Millisecond

// requeue puts a preempted line back on the stream as a new message and
// acknowledges this one: a line preempted many times never reaches
// MaxDeliver for it, and counts as no failure. A worker dying between
// the two leaves both, and the result is still stored once.
func (s *Service) requeue(ctx context.Context, b *bus, msg jetstream.Msg, j job) {
	s.preempted.Add(1)
	var seq [6]byte
	rand.Read(seq[:])
	_, err := b.js.Publish(ctx, msg.Subject(), msg.Data(), jetstream.WithMsgID(j.Batch+"."+strconv.Itoa(j.Index)+".p"+hex.EncodeToString(seq[:])))
	if err != nil {
		msg.NakWithDelay(requeuePause)
		return
	}
	msg.Ack()
}

// recorder is the response writer a line is served into.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) Flush() {}

// count adds a stored line to the batch's request_counts, and settles
// the batch when the counts say every line is done. The counts only
// ever lag (a worker that died between storing and counting); the
// finalizer recounts from the results.
func (s *Service) count(ctx context.Context, b *bus, key string, ok bool) {
	for range 100 {
		rec, rev, err := b.record(ctx, key)
		if err != nil || rec == nil {
			return
		}
		st := rec.Batch.Status
		if st != StatusInProgress && st != StatusValidating {
			return
		}
		if st == StatusValidating {
			at := s.now().Unix()
			rec.Batch.Status, rec.Batch.InProgressAt = StatusInProgress, &at
		}
		if ok {
			rec.Batch.RequestCounts.Completed++
		} else {
			rec.Batch.RequestCounts.Failed++
		}
		if _, err := b.batches.Update(ctx, key, mustJSON(rec), rev); err != nil {
			if ctx.Err() != nil {
				return
			}
			continue // someone else updated it: read again
		}
		c := rec.Batch.RequestCounts
		if c.Completed+c.Failed >= c.Total {
			s.settle(ctx, b, key)
		}
		return
	}
}

// settle finishes the batch if every line has a result.
func (s *Service) settle(ctx context.Context, b *bus, key string) {
	rec, _, err := b.record(ctx, key)
	if err != nil || rec == nil || terminal(rec.Batch.Status) {
		return
	}
	if err := s.check(ctx, b, key, rec); err != nil {
		s.log.Warn("settling batch", "key", key, "err", err)
	}
}
