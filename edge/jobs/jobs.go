// Package jobs is the edge's asynchronous work: the OpenAI Files and
// Batch APIs (/v1/files, /v1/batches) and the workers that run batch
// lines, all on the control plane's NATS JetStream (shared/jobswire).
//
// An uploaded file is checked line by line and kept in JetStream's
// object store. Creating a batch publishes each line to the work-queue
// stream, on a subject per model, and keeps the batch record in a
// key-value bucket. Workers on every edge pull lines, preferring models
// this node serves locally, and run each through the node's own HTTP
// handler as the key that created the batch, so routing, limits and
// usage records apply exactly as to an interactive request (one record
// per line; the line's request ID is derived from batch and custom_id,
// so a line run twice is billed once). A line's result is stored once,
// under batch and custom_id (a key-value Create: a redelivered line
// finds it taken), and only then is the line acknowledged; a worker
// that dies mid-line leaves it to JetStream to redeliver after AckWait,
// at most MaxDeliver times. When every line has a result, one worker
// (whoever wins a compare-and-set on the record) writes the output and
// error files exactly as OpenAI does, and completes the batch.
//
// Batch work runs below interactive traffic: Workers lines at once at
// most, and a line starts only when Busy says its model's capacity is
// spare (the node: for a local model, a free engine slot, nothing
// queued and no interactive request in flight). A line already running
// finishes: an interactive request waits at most for the lines that
// hold engine slots when it arrives.
//
// Objects and batches belong to the caller's tenant (or key, without
// one): another tenant gets 404, never a hint that they exist.
//
// The package must never answer a client in a format other than
// OpenAI's, nor acknowledge a line before its result is stored.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Service.
type Config struct {
	// Node is this edge's node ID, for logs.
	Node string
	// Run serves a batch line: the node's own HTTP handler.
	Run http.Handler
	// Authenticate says who a Files or Batches request is for.
	Authenticate func(*http.Request) (api.Identity, *llm.Error)
	// LocalModels lists the model IDs this node serves locally; their
	// lines are pulled first. Nil means none.
	LocalModels func() []string
	// Busy reports that a line for model must not start now, because
	// interactive traffic needs the capacity it would take; the worker
	// looks again shortly. Nil means never busy.
	Busy func(model string) bool
	// Preempt reports that a running line for model must give its
	// capacity back now, because an interactive request waits for it:
	// the line's request is cancelled and the line requeued, to run
	// again later, not counted as a failure. Checked every
	// PreemptCheck while a line runs. Nil means never.
	Preempt func(model string) bool
	// PreemptCheck is how often a running line asks Preempt. Default
	// 10ms.
	PreemptCheck time.Duration
	// Workers is how many lines this node runs at once. Default 2.
	Workers int
	// AckWait is how long a pulled line may go unacknowledged before
	// JetStream gives it to another worker; a running line extends it
	// every AckWait/3. Default 30s.
	AckWait time.Duration
	// MaxDeliver bounds how often a line is handed out; the last try
	// stores whatever it gets, even a retryable error. Default 5.
	MaxDeliver int
	// Retry is the delay before a line that got a retryable error (429,
	// 5xx) is handed out again. Default 1s doubling to 30s.
	Retry backoff.Policy
	// MaxFileBytes bounds an uploaded file, bytes. Default 100 MiB.
	MaxFileBytes int64
	// MaxLines bounds the requests in one file. Default 50,000.
	MaxLines int
	// MaxWindow bounds a batch's completion_window. Default 7 days
	// (results are kept for jobswire's ResultsTTL, which is longer).
	MaxWindow time.Duration
	// Poll is how often idle workers look for models with lines
	// waiting, before jitter. Default 500ms.
	Poll time.Duration
	// Tenant returns the table's tenant id, for webhook calls: its
	// policy is read again at every call. Nil refuses every call.
	Tenant func(id string) *table.Tenant
	// WebhookTimeout bounds one webhook call, connect to last byte.
	// Default 10s.
	WebhookTimeout time.Duration
	// WebhookRetry is the wait between a failed webhook call and the
	// next. Default 1s doubling to 5 minutes.
	WebhookRetry backoff.Policy
	// WebhookRetryFor is how long an event is retried after it was
	// emitted before it becomes a dead letter. Default 24h.
	WebhookRetryFor time.Duration
	// Logger receives worker problems. Nil means slog.Default.
	Logger *slog.Logger
	// Now is the clock for timestamps and expiry; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a config with every default set; Run and
// Authenticate must still be given.
func DefaultConfig() Config {
	return Config{Workers: 2, AckWait: 30 * time.Second, MaxDeliver: 5,
		Retry:        backoff.Policy{Base: time.Second, Max: 30 * time.Second, Jitter: 0.2},
		MaxFileBytes: 100 << 20, MaxLines: 50_000, MaxWindow: 7 * 24 * time.Hour, Poll: 500 * time.Millisecond,
		WebhookTimeout: 10 * time.Second, WebhookRetryFor: 24 * time.Hour, PreemptCheck: 10 * time.Millisecond,
		WebhookRetry: backoff.Policy{Base: time.Second, Max: 5 * time.Minute, Jitter: 0.2}}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Run == nil || c.Authenticate == nil {
		errs = append(errs, errors.New("jobs: Run and Authenticate are required"))
	}
	if c.Workers < 1 || c.MaxDeliver < 1 || c.MaxLines < 1 {
		errs = append(errs, errors.New("jobs: workers, max deliver and max lines must be at least 1"))
	}
	if c.AckWait < time.Second || c.Poll <= 0 || c.MaxWindow <= 0 || c.MaxFileBytes <= 0 {
		errs = append(errs, errors.New("jobs: ack wait must be at least 1s; poll, max window and max file bytes positive"))
	}
	if c.Preempt != nil && c.PreemptCheck <= 0 {
		errs = append(errs, errors.New("jobs: preempt check must be positive"))
	}
	if c.WebhookTimeout <= 0 || c.WebhookRetryFor <= 0 || c.WebhookRetry.Base <= 0 {
		errs = append(errs, errors.New("jobs: webhook timeout, retry window and retry base must be positive"))
	}
	if c.MaxWindow >= jobswire.ResultsTTL {
		errs = append(errs, errors.New("jobs: max window must be shorter than the results' TTL"))
	}
	return errors.Join(errs...)
}

// Service serves the Files and Batches APIs and runs batch lines.
type Service struct {
	cfg Config
	log *slog.Logger

	running   atomic.Int64 // lines being served now
	preempted atomic.Int64 // lines given back to interactive traffic, ever

	mu    sync.Mutex
	b     *bus // nil until Start finds the streams
	stop  context.CancelFunc
	wg    sync.WaitGroup
	ready chan struct{} // closed once b is set
}

// bus is the JetStream side, once bound.
type bus struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	files   jetstream.ObjectStore
	batches jetstream.KeyValue
	results jetstream.KeyValue
}

// New returns a Service; it answers 503 until Start binds it.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{cfg: cfg, log: log.With("component", "jobs"), ready: make(chan struct{})}, nil
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// Start binds the service to the streams on nc, waiting in the
// background until the control plane has created them, then starts the
// workers. A nil nc (an edge without a control plane) leaves the APIs
// answering 503.
func (s *Service) Start(nc *nats.Conn) error {
	if nc == nil {
		return nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		retry := backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
		for attempt := 0; ; attempt++ {
			b, err := bind(ctx, js)
			if err == nil {
				s.mu.Lock()
				s.b = b
				s.mu.Unlock()
				close(s.ready)
				break
			}
			if attempt == 3 {
				s.log.Warn("batch streams not there yet; retrying", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry.Delay(attempt)):
			}
		}
		s.runWorkers(ctx)
	}()
	return nil
}

func bind(ctx context.Context, js jetstream.JetStream) (*bus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b := &bus{js: js}
	var err error
	if b.stream, err = js.Stream(ctx, jobswire.Stream); err != nil {
		return nil, err
	}
	if b.files, err = js.ObjectStore(ctx, jobswire.Files); err != nil {
		return nil, err
	}
	if b.batches, err = js.KeyValue(ctx, jobswire.Batches); err != nil {
		return nil, err
	}
	if b.results, err = js.KeyValue(ctx, jobswire.Results); err != nil {
		return nil, err
	}
	return b, nil
}

// Ready returns a channel closed once the service is bound to the
// streams.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Close stops the workers; lines they were running and had not stored
// are redelivered to another worker after AckWait.
func (s *Service) Close() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.wg.Wait()
}

// Preempted returns how many running lines this node has given back to
// interactive traffic.
func (s *Service) Preempted() int64 { return s.preempted.Load() }

// Running returns how many lines this node is serving now, so the node
// can tell its interactive requests in flight from batch lines.
func (s *Service) Running() int { return int(s.running.Load()) }

func (s *Service) bus() *bus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}
