// Package cache is the edge's answer cache: a request a tenant already
// asked, answered from this edge's memory instead of a provider.
//
// The exact cache keys an answer by a canonical hash of the tenant, the
// model and everything in the canonical request that can change the
// answer (KeyOf), so an OpenAI and an Anthropic request for the same
// thing share one entry. Entries live in a per-edge store with a byte
// cap and a TTL (otter, W-TinyLFU eviction). An entry keeps the answer
// in OpenAI's shape, which both surfaces render from: a plain answer as
// its body, a stream as its chunks with the original write grouping, so
// a replay is chunked like the original.
//
// The semantic cache (Semantic) indexes the embedding of a request's
// last user turn under its exact context (ContextKeyOf), and finds the
// stored answer of a similar enough turn by exact cosine search.
//
// What decides whether a request may use the cache (Decide, Combine)
// and where an answer may be served (Allowed: an entry remembers the
// region of the target that produced it) lives here too; the request
// pipeline (edge/api) applies it.
//
// The key is computed from the canonical request the surface decoded,
// the fields it did not read included (llm.ChatRequest.Extra), so an
// OpenAI or Anthropic body is not read a second time; it reads the
// client's body (with jsonscan, the edge's JSON reader) only for a
// request whose decoder did not keep those fields (Responses).
//
// The cache must never answer one tenant with another's entry, never
// answer from an entry produced outside the regions the request
// allows, and never store a sampled answer unless a policy forces it.
// It does no I/O.
package cache

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// Config is a store's configuration.
type Config struct {
	// MaxBytes caps the bytes the store's entries hold (their answers
	// plus a fixed overhead each, entryOverhead). Older and rarely used
	// entries are evicted to stay under it.
	MaxBytes int64
	// MaxEntryBytes is the largest answer stored, bytes; bigger answers
	// are served and not kept. Zero means MaxBytes/16.
	MaxEntryBytes int64
	// DefaultTTL is how long an entry is served when no policy sets a
	// TTL.
	DefaultTTL time.Duration
	// Now is the clock for expiry; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a 256 MiB store whose entries live 5 minutes.
func DefaultConfig() Config {
	return Config{MaxBytes: 256 << 20, DefaultTTL: 5 * time.Minute}
}

// Validate reports a store that could hold nothing.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("cache: MaxBytes must be positive, got %d", c.MaxBytes))
	}
	if c.MaxEntryBytes < 0 || c.MaxEntryBytes > c.MaxBytes {
		errs = append(errs, fmt.Errorf("cache: MaxEntryBytes must be between 0 and MaxBytes (%d), got %d", c.MaxBytes, c.MaxEntryBytes))
	}
	if c.DefaultTTL <= 0 {
		errs = append(errs, fmt.Errorf("cache: DefaultTTL must be positive, got %v", c.DefaultTTL))
	}
	return errors.Join(errs...)
}

// Entry is one cached answer.
type Entry struct {
	// Tenant and Model are the key's, checked again on every hit: a key
	// collision must never cross tenants.
	Tenant, Model string
	// Region is where the answer was produced: the region of the target
	// that served it. A hit needs it allowed.
	Region string
	// Target, Kind, Provider and UpstreamModel are the route that
	// produced the answer, for the hit's price and its route header.
	Target, Kind, Provider, UpstreamModel string
	// Usage is the answer's token count.
	Usage llm.Usage
	// Format is the answer's format: empty for OpenAI's shape, which
	// both surfaces render, or a client format (Anthropic's) an upstream
	// answered in natively, which only that format's clients are served.
	Format llm.Format
	// Body is a plain answer: an OpenAI chat completion, or the native
	// answer in Format.
	Body []byte
	// Chunks are a stream's chunks as OpenAI chunk JSON, without the
	// usage-only chunk (a replay renders usage itself, marked cached),
	// or a native stream's events (data, named by Events[i]); Ends[i]
	// says chunk i ended a burst the upstream delivered at once, where
	// the relay flushed.
	Chunks [][]byte
	Events []string
	Ends   []bool
	// Stream says the entry is a stream.
	Stream bool
	// Stored is when the entry was stored, and Expires when it stops
	// being served.
	Stored, Expires time.Time
}

// entryOverhead is what an entry costs beyond its answer's bytes: the
// struct, its strings and the store's node, rounded up.
const entryOverhead = 512

// Size is the bytes the entry counts against the cap.
func (e *Entry) Size() int64 {
	n := int64(entryOverhead + len(e.Body) + len(e.Tenant) + len(e.Model) + len(e.Region) + len(e.Target) + len(e.UpstreamModel))
	for _, c := range e.Chunks {
		n += int64(len(c)) + 25 // the slice header and its end flag
	}
	for _, ev := range e.Events {
		n += int64(len(ev)) + 16
	}
	return n
}

// Store is one edge's cache. It is safe for concurrent use.
type Store struct {
	cfg  Config
	c    *otter.Cache[Key, *Entry]
	hits atomic.Int64
	miss atomic.Int64
}

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxEntryBytes == 0 {
		cfg.MaxEntryBytes = max(cfg.MaxBytes/16, 1)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c, err := otter.New(&otter.Options[Key, *Entry]{
		MaximumWeight: uint64(cfg.MaxBytes),
		Weigher: func(_ Key, e *Entry) uint32 {
			return uint32(min(e.Size(), 1<<32-1))
		},
		// Each entry lives for its own TTL from when it was stored;
		// reads do not extend it.
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[Key, *Entry]) time.Duration {
			return e.Value.Expires.Sub(e.Value.Stored)
		}),
		Clock: clock{cfg.Now},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Store{cfg: cfg, c: c}, nil
}

// clock is otter's view of the store's clock. It gives no ticks: expired
// entries are dropped on access and by the maintenance writes run, so
// the store starts no goroutine of its own.
type clock struct{ now func() time.Time }

func (c clock) NowNano() int64                      { return c.now().UnixNano() }
func (c clock) Tick(time.Duration) <-chan time.Time { return nil }

// Get returns the live entry under k for tenant, or false. An entry
// whose tenant is not tenant is never returned.
func (s *Store) Get(k Key, tenant string) (*Entry, bool) {
	e, ok := s.c.GetIfPresent(k)
	if !ok || e.Tenant != tenant || !s.cfg.Now().Before(e.Expires) {
		s.miss.Add(1)
		return nil, false
	}
	s.hits.Add(1)
	return e, true
}

// Peek is Get without counting, for the dry run.
func (s *Store) Peek(k Key, tenant string) (*Entry, bool) {
	e, ok := s.c.GetIfPresent(k)
	if !ok || e.Tenant != tenant || !s.cfg.Now().Before(e.Expires) {
		return nil, false
	}
	return e, true
}

// Put stores e under k for ttl (the store's default when zero). It
// reports false when the answer is too big to keep.
func (s *Store) Put(k Key, e *Entry, ttl time.Duration) bool {
	if ttl <= 0 {
		ttl = s.cfg.DefaultTTL
	}
	if e.Size() > s.cfg.MaxEntryBytes {
		return false
	}
	e.Stored = s.cfg.Now()
	e.Expires = e.Stored.Add(ttl)
	s.c.Set(k, e)
	return true
}

// Stats are a store's counters.
type Stats struct {
	Hits, Misses int64
	Entries      int
	// Bytes is what the entries count against MaxBytes.
	Bytes uint64
}

// Stats returns the store's counters now.
func (s *Store) Stats() Stats {
	return Stats{Hits: s.hits.Load(), Misses: s.miss.Load(), Entries: s.c.EstimatedSize(), Bytes: s.c.WeightedSize()}
}

// CleanUp runs the store's pending maintenance (evictions, expiry) now.
func (s *Store) CleanUp() { s.c.CleanUp() }

// Close stops whatever the store runs in the background.
func (s *Store) Close() { s.c.StopAllGoroutines() }

// MaxEntryBytes is the largest answer the store keeps, bytes.
func (s *Store) MaxEntryBytes() int64 { return s.cfg.MaxEntryBytes }

// DefaultTTL is how long an entry lives when no policy says.
func (s *Store) DefaultTTL() time.Duration { return s.cfg.DefaultTTL }
