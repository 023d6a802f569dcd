package loadgen

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// OpenLoop sends requests at a fixed rate whatever the server does, the
// way independent clients would.
type OpenLoop struct {
	// Rate is the send rate, in requests per second.
	Rate float64
	// Duration is how long to send; the run plans Rate×Duration requests.
	Duration time.Duration
	// MaxInFlight bounds the requests outstanding at once. When all are
	// busy, later requests wait, and their wait counts in their latency.
	// Default: 512.
	MaxInFlight int
	// Timeout bounds one request. Default: DefaultTimeout.
	Timeout time.Duration
	// Grace is how far past Duration a late request may still start; the
	// rest count as Unsent. Default: 1s.
	Grace time.Duration
}

// Requests is the number of requests the run plans.
func (o OpenLoop) Requests() int {
	return int(math.Round(o.Rate * o.Duration.Seconds()))
}

func (o *OpenLoop) fill() error {
	if !(o.Rate > 0) || o.Rate > 1e6 {
		return errors.New("loadgen: open loop rate must be in (0, 1e6] per second")
	}
	if o.Duration <= 0 {
		return errors.New("loadgen: open loop duration must be positive")
	}
	if o.Requests() < 1 {
		return errors.New("loadgen: open loop plans no requests")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 512
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Grace <= 0 {
		o.Grace = time.Second
	}
	return nil
}

// Open runs an open loop against t. Request i is due at start + i/Rate;
// its latency runs from that due time, not from when it actually went
// out, so neither a slow server nor a late generator hides queueing
// (coordinated omission). When ctx ends it stops and returns what it
// measured with ctx's error.
func (c *Client) Open(ctx context.Context, t Target, o OpenLoop) (Result, error) {
	if err := o.fill(); err != nil {
		return Result{}, err
	}
	n := o.Requests()
	interval := time.Duration(float64(time.Second) / o.Rate)
	sendBy := o.Duration + o.Grace
	lat := make([]time.Duration, n)  // from due time; failed unless OK
	late := make([]time.Duration, n) // start minus due time; failed if unsent
	jobs := make(chan int, n)        // buffered so the scheduler never blocks
	rctx, cancel := context.WithTimeout(ctx, sendBy+o.Timeout)
	defer cancel()

	var st runState
	start := time.Now()
	var wg sync.WaitGroup
	for range min(o.MaxInFlight, n) {
		wg.Go(func() {
			for i := range jobs {
				due := time.Duration(i) * interval
				began := time.Since(start)
				if began > sendBy || rctx.Err() != nil {
					lat[i], late[i] = failed, failed
					continue
				}
				late[i] = began - due
				st.started(began)
				qctx, qcancel := context.WithTimeout(rctx, o.Timeout)
				err := c.send(qctx, &t)
				qcancel()
				done := time.Since(start)
				st.finished(done, err)
				lat[i] = done - due
				if err != nil {
					lat[i] = failed
				}
			}
		})
	}
	restore := pinScheduler()
	for i := range n {
		if sleepUntil(rctx, start.Add(time.Duration(i)*interval)) != nil || time.Since(start) > sendBy {
			for ; i < n; i++ {
				lat[i], late[i] = failed, failed
			}
			break
		}
		jobs <- i
	}
	restore()
	close(jobs)
	wg.Wait()

	r := st.result(lat)
	r.Unsent = n - r.Sent
	r.Lateness = collect(late)
	return r, ctx.Err()
}

// ClosedLoop keeps a fixed number of requests outstanding: each worker
// sends its next request as soon as its last one is answered, which finds
// the highest throughput the server sustains at that concurrency.
type ClosedLoop struct {
	// Concurrency is the number of requests outstanding at once.
	Concurrency int
	// Duration is how long workers keep starting requests.
	Duration time.Duration
	// MaxRequests bounds the requests of the run, and so the samples it
	// allocates up front (8 bytes each). Default: 500,000.
	MaxRequests int
	// Timeout bounds one request. Default: DefaultTimeout.
	Timeout time.Duration
}

func (o *ClosedLoop) fill() error {
	if o.Concurrency < 1 {
		return errors.New("loadgen: closed loop concurrency must be at least 1")
	}
	if o.Duration <= 0 {
		return errors.New("loadgen: closed loop duration must be positive")
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = 500_000
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return nil
}

// Closed runs a closed loop against t. Latency runs from each request's
// actual send. When ctx ends it stops and returns what it measured with
// ctx's error.
func (c *Client) Closed(ctx context.Context, t Target, o ClosedLoop) (Result, error) {
	if err := o.fill(); err != nil {
		return Result{}, err
	}
	lat := make([]time.Duration, o.MaxRequests)
	r := c.workers(ctx, o.Concurrency, o.Duration, o.Timeout, lat, func(ctx context.Context, slot int) error {
		began := time.Now()
		err := c.send(ctx, &t)
		lat[slot] = time.Since(began)
		return err
	})
	return r, ctx.Err()
}

// workers runs conc goroutines that claim slots of lat, in order, until
// all are claimed, duration has passed or ctx ends; do fills the slot it
// is given. A failed request's slot is marked failed.
func (c *Client) workers(ctx context.Context, conc int, duration, timeout time.Duration,
	lat []time.Duration, do func(ctx context.Context, slot int) error) Result {
	ctx, cancel := context.WithTimeout(ctx, duration+timeout)
	defer cancel()
	var st runState
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Since(start) < duration && ctx.Err() == nil {
				slot := int(next.Add(1) - 1)
				if slot >= len(lat) {
					return
				}
				st.started(time.Since(start))
				qctx, qcancel := context.WithTimeout(ctx, timeout)
				err := do(qctx, slot)
				qcancel()
				st.finished(time.Since(start), err)
				if err != nil {
					lat[slot] = failed
				}
			}
		})
	}
	wg.Wait()
	return st.result(lat[:min(int(next.Load()), len(lat))])
}

// runState gathers a run's counts and times from its goroutines.
type runState struct {
	sent, ok    atomic.Int64
	errs        errorLog
	first, last atomic.Int64 // offsets of the first and last start, plus 1 (0: none yet)
	lastDone    atomic.Int64 // offset of the last completion
}

func (s *runState) started(off time.Duration) {
	s.sent.Add(1)
	v := int64(off) + 1
	s.first.CompareAndSwap(0, v) // offsets only grow, up to goroutine races of a few µs
	storeMax(&s.last, v)
}

func (s *runState) finished(off time.Duration, err error) {
	storeMax(&s.lastDone, int64(off))
	if err != nil {
		s.errs.add(err)
		return
	}
	s.ok.Add(1)
}

// result builds the Result; slots are the run's latency slots, of which
// the successful ones are kept.
func (s *runState) result(slots []time.Duration) Result {
	r := Result{
		Sent:       int(s.sent.Load()),
		OK:         int(s.ok.Load()),
		Errors:     int(s.errs.n.Load()),
		FirstError: s.errs.first,
		Elapsed:    time.Duration(s.lastDone.Load()),
		Latencies:  collect(slots),
	}
	if r.Sent >= 2 {
		span := time.Duration(s.last.Load() - s.first.Load())
		r.SendSpan = time.Duration(float64(span) * float64(r.Sent) / float64(r.Sent-1))
	}
	return r
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
