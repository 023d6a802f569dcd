// Package limits enforces the routing table's requests-per-minute and
// tokens-per-minute limits of keys and tenants, fleet-wide, with no
// remote call on a request's path.
//
// Every edge counts what it admitted for each limited subject ("key/ID",
// "tenant/ID") in a sliding window (one minute, in buckets), and about
// once per exchange interval publishes its window's use of every subject
// (usagev1.LimitReport on usagewire.LimitsSubject(node)); it keeps every
// other edge's latest report (usagewire.LimitsSubjects).
//
// The share rule. Edge i admits a request of cost c against a limit L
// when
//
//	own_i + Σ_{j≠i} R_j + c ≤ L
//
// where own_i is its own use in the window, exact and current, and R_j
// edge j's use as of its latest report. Its share of L is what the other
// edges did not use, L − Σ_{j≠i} R_j: an edge that carries all of a
// key's traffic may use all of its limit, and shares move with traffic
// at the speed of the reports. A report older than the window is
// dropped (its use would have left the window anyway).
//
// Worst-case overshoot. Each edge's view of the others is late by at
// most D, one exchange interval (with its jitter, up to 1.5 × Interval)
// plus the bus's delivery time. Every admission is checked against the
// fleet's true use minus what the other edges admitted in the last D,
// so over any window the fleet's use of a limit is at most
//
//	L + what the other edges admitted in the D before each admission
//
// which is at most one exchange delay of the fleet's traffic above the
// limit: with N edges sending evenly, (N−1)/N of the fleet's traffic in
// D. A burst that starts on every edge in the same instant is the worst
// case; steady traffic overshoots by much less, because the headroom is
// used up gradually and seen. Tests drive three limiters over a real
// NATS server round by round and check exactly this bound.
//
// Tokens are charged at admission from an estimate (the caller's, from
// the prompt) and corrected (Correct) by the usage the answer reports, so
// the window holds what was really used.
//
// The package never blocks a request on the bus: Admit and Correct only
// touch memory under one mutex; reports travel on their own goroutines.
package limits

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/usagewire"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// Config configures a Limiter.
type Config struct {
	// Node is this edge's node ID, the subject it reports on.
	Node string
	// Window is the span a limit counts over. Default one minute, the
	// "per minute" of RPM and TPM; tests shorten it.
	Window time.Duration
	// Buckets is how many parts the window is counted in; use leaves the
	// window one bucket at a time. Default 60.
	Buckets int
	// Interval is how often the edge publishes its use, jittered between
	// 0.5× and 1.5×. Default 1s.
	Interval time.Duration
	// Logger receives bus errors. Nil means slog.Default.
	Logger *slog.Logger
}

// DefaultConfig returns the settings used where nothing is set.
func DefaultConfig() Config {
	return Config{Window: time.Minute, Buckets: 60, Interval: time.Second}
}

// Validate checks c.
func (c *Config) Validate() error {
	switch {
	case c.Window <= 0:
		return fmt.Errorf("limits: window must be positive, got %v", c.Window)
	case c.Buckets < 1 || c.Buckets > 3600:
		return fmt.Errorf("limits: buckets must be 1 to 3600, got %d", c.Buckets)
	case c.Interval <= 0:
		return fmt.Errorf("limits: interval must be positive, got %v", c.Interval)
	}
	return nil
}

// Kind says what a Subject limits.
type Kind uint8

const (
	KindKey Kind = iota + 1
	KindTenant
)

// Subject is a limited key or tenant.
type Subject struct {
	Kind Kind
	ID   string
}

// String renders s as in limit reports: "key/ID" or "tenant/ID".
func (s Subject) String() string {
	if s.Kind == KindTenant {
		return "tenant/" + s.ID
	}
	return "key/" + s.ID
}

func parseSubject(v string) (Subject, bool) {
	kind, id, ok := strings.Cut(v, "/")
	switch {
	case !ok || id == "":
		return Subject{}, false
	case kind == "key":
		return Subject{KindKey, id}, true
	case kind == "tenant":
		return Subject{KindTenant, id}, true
	}
	return Subject{}, false
}

// Check is one limit a request counts against: a subject with its
// requests and tokens per window; 0 means no limit of that kind.
type Check struct {
	Subject  Subject
	RPM, TPM int64
}

// Verdict is Admit's answer, with what the rate-limit headers say: the
// tightest limit of each kind that applies.
type Verdict struct {
	Allowed bool
	// Tokens is true when the refusal is for tokens, not requests, and
	// Refused is the subject whose limit refused it.
	Tokens  bool
	Refused Subject
	// RetryAfter is how long until the refused limit has room again.
	RetryAfter time.Duration
	// Requests and TokenState describe the limits that applied; Has is
	// false when no limit of that kind did.
	Requests, TokenState State
}

// State is one kind of limit as the headers report it.
type State struct {
	Has       bool
	Limit     int64
	Remaining int64
	// Reset is when the window's use falls back to nothing, from now.
	Reset time.Duration
}

// Limiter counts use and decides admissions. Safe for concurrent use.
type Limiter struct {
	cfg    Config
	log    *slog.Logger
	bucket time.Duration

	mu    sync.Mutex // guards everything below; nothing else is locked while held
	own   map[Subject]*window
	peers map[string]*peerReport
	// remote is, per subject, the sum of the peers' latest reports.
	remote map[Subject]use

	stop chan struct{}
	done sync.WaitGroup
}

type use struct{ requests, tokens int64 }

type peerReport struct {
	at   time.Time
	uses map[Subject]use
}

// window is a subject's own use in a ring of buckets, with running
// sums, so a check costs the same whatever the bucket count: the ring is
// advanced to the current period, subtracting what leaves it.
type window struct {
	reqs, toks []int64
	// head is the latest period the ring was advanced to; bucket
	// head % len is the current one.
	head       int64
	sumR, sumT int64
	last       time.Time // last admission, for forgetting idle subjects
}

// advance moves w to period p, dropping buckets that left the window.
// A clock that steps back leaves w where it is.
func (w *window) advance(p int64) {
	if p <= w.head {
		return
	}
	n := int64(len(w.reqs))
	if p-w.head >= n {
		clear(w.reqs)
		clear(w.toks)
		w.sumR, w.sumT = 0, 0
	} else {
		for q := w.head + 1; q <= p; q++ {
			i := q % n
			w.sumR -= w.reqs[i]
			w.sumT -= w.toks[i]
			w.reqs[i], w.toks[i] = 0, 0
		}
	}
	w.head = p
}

// oldest returns the period of w's oldest non-empty bucket, head+1 when
// none is. Only refusals need it.
func (w *window) oldest() int64 {
	n := int64(len(w.reqs))
	for q := w.head - n + 1; q <= w.head; q++ {
		if i := ((q % n) + n) % n; w.reqs[i] != 0 || w.toks[i] != 0 {
			return q
		}
	}
	return w.head + 1
}

func (w *window) add(reqs, toks int64) {
	i := w.head % int64(len(w.reqs))
	w.reqs[i] += reqs
	w.toks[i] += toks
	w.sumR += reqs
	w.sumT += toks
}

// New returns a Limiter; it exchanges nothing until Start.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Limiter{
		cfg: cfg, log: cfg.Logger, bucket: cfg.Window / time.Duration(cfg.Buckets),
		own: map[Subject]*window{}, peers: map[string]*peerReport{}, remote: map[Subject]use{},
	}, nil
}

func (l *Limiter) windowOf(s Subject, p int64) *window {
	w := l.own[s]
	if w == nil {
		n := l.cfg.Buckets
		w = &window{reqs: make([]int64, n), toks: make([]int64, n), head: p}
		l.own[s] = w
	}
	w.advance(p)
	return w
}

func (l *Limiter) period(t time.Time) int64 { return t.UnixNano() / int64(l.bucket) }

// Admit decides a request that counts against checks and is estimated
// to use tokens, and charges it to every check when it is allowed.
func (l *Limiter) Admit(now time.Time, checks []Check, tokens int64) Verdict {
	v := Verdict{Allowed: true}
	if len(checks) == 0 {
		return v
	}
	p := l.period(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range checks {
		c := &checks[i]
		if c.RPM <= 0 && c.TPM <= 0 {
			continue
		}
		w := l.windowOf(c.Subject, p)
		r := l.remote[c.Subject]
		reqs, toks := w.sumR+r.requests, max(w.sumT+r.tokens, 0)
		// A full reset comes when the newest use leaves the window.
		reset := l.resetAfter(now, p)
		if c.RPM > 0 {
			ok := reqs+1 <= c.RPM
			v.Requests = tighter(v.Requests, State{Has: true, Limit: c.RPM, Remaining: max(c.RPM-reqs, 0), Reset: reset})
			if !ok && v.Allowed {
				v.Allowed, v.Refused, v.RetryAfter = false, c.Subject, l.retryAfter(now, w.oldest())
			}
		}
		if c.TPM > 0 {
			ok := toks+tokens <= c.TPM
			v.TokenState = tighter(v.TokenState, State{Has: true, Limit: c.TPM, Remaining: max(c.TPM-toks, 0), Reset: reset})
			if !ok && v.Allowed {
				v.Allowed, v.Tokens, v.Refused, v.RetryAfter = false, true, c.Subject, l.retryAfter(now, w.oldest())
			}
		}
	}
	if !v.Allowed {
		return v
	}
	for i := range checks {
		c := &checks[i]
		if c.RPM <= 0 && c.TPM <= 0 {
			continue
		}
		w := l.own[c.Subject]
		w.add(1, tokens)
		w.last = now
	}
	// The answer's headers count this request as used.
	if v.Requests.Has {
		v.Requests.Remaining = max(v.Requests.Remaining-1, 0)
	}
	if v.TokenState.Has {
		v.TokenState.Remaining = max(v.TokenState.Remaining-tokens, 0)
	}
	return v
}

// tighter returns the state with less room of a and b.
func tighter(a, b State) State {
	if !a.Has || b.Remaining < a.Remaining {
		return b
	}
	return a
}

// resetAfter is when the window's oldest use leaves it, from now: the
// time to a full reset when it is the only use.
func (l *Limiter) resetAfter(now time.Time, oldest int64) time.Duration {
	end := time.Unix(0, (oldest+int64(l.cfg.Buckets))*int64(l.bucket))
	return max(end.Sub(now), 0)
}

// retryAfter is when the refused limit gains room: when the oldest
// bucket leaves the window, at least one bucket from now when the room
// is the peers' to give back.
func (l *Limiter) retryAfter(now time.Time, oldest int64) time.Duration {
	d := l.resetAfter(now, oldest)
	if d <= 0 || oldest > l.period(now) {
		d = l.bucket
	}
	return d
}

// Correct adds delta tokens (the answer's usage minus the estimate
// Admit charged; negative when the estimate was high) to every check's
// current bucket.
func (l *Limiter) Correct(now time.Time, checks []Check, delta int64) {
	if delta == 0 || len(checks) == 0 {
		return
	}
	p := l.period(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range checks {
		c := &checks[i]
		if c.RPM <= 0 && c.TPM <= 0 {
			continue
		}
		l.windowOf(c.Subject, p).add(0, delta)
	}
}

// Used returns the fleet's use of s in the window as this edge sees it:
// its own, now, plus its peers' latest reports.
func (l *Limiter) Used(now time.Time, s Subject) (requests, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.remote[s]
	if w := l.own[s]; w != nil {
		w.advance(l.period(now))
		requests, tokens = w.sumR, w.sumT
	}
	return requests + r.requests, max(tokens+r.tokens, 0)
}

// Report returns this edge's use of every subject it counted in the
// window ending now, and forgets subjects idle for a whole window.
func (l *Limiter) Report(now time.Time) *usagev1.LimitReport {
	p := l.period(now)
	rep := &usagev1.LimitReport{Schema: 1, Node: l.cfg.Node, UnixMs: now.UnixMilli(), WindowMs: uint32(l.cfg.Window.Milliseconds())}
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, w := range l.own {
		if now.Sub(w.last) > l.cfg.Window+l.bucket {
			delete(l.own, s)
			continue
		}
		w.advance(p)
		reqs, toks := w.sumR, w.sumT
		if reqs == 0 && toks <= 0 {
			continue
		}
		rep.Uses = append(rep.Uses, &usagev1.LimitUse{Subject: s.String(), Requests: uint64(reqs), Tokens: uint64(max(toks, 0))})
	}
	for node, pr := range l.peers {
		if now.Sub(pr.at) > l.cfg.Window {
			l.dropPeer(node)
		}
	}
	return rep
}

// Apply takes another edge's report in, replacing its previous one.
// Reports from this node are ignored.
func (l *Limiter) Apply(now time.Time, rep *usagev1.LimitReport) {
	if rep.GetNode() == "" || rep.GetNode() == l.cfg.Node {
		return
	}
	uses := make(map[Subject]use, len(rep.GetUses()))
	for _, u := range rep.GetUses() {
		s, ok := parseSubject(u.GetSubject())
		if !ok {
			continue
		}
		uses[s] = use{int64(min(u.GetRequests(), 1<<40)), int64(min(u.GetTokens(), 1<<50))}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropPeer(rep.GetNode())
	l.peers[rep.GetNode()] = &peerReport{at: now, uses: uses}
	for s, u := range uses {
		r := l.remote[s]
		l.remote[s] = use{r.requests + u.requests, r.tokens + u.tokens}
	}
}

// dropPeer removes node's report from the sums. l.mu is held.
func (l *Limiter) dropPeer(node string) {
	pr := l.peers[node]
	if pr == nil {
		return
	}
	for s, u := range pr.uses {
		r := l.remote[s]
		r = use{r.requests - u.requests, r.tokens - u.tokens}
		if r.requests <= 0 && r.tokens <= 0 {
			delete(l.remote, s)
		} else {
			l.remote[s] = r
		}
	}
	delete(l.peers, node)
}

// Start exchanges reports over nc until Close: it publishes this edge's
// use every Interval (jittered) and applies every other edge's.
func (l *Limiter) Start(nc *nats.Conn) error {
	sub, err := nc.Subscribe(usagewire.LimitsSubjects, func(m *nats.Msg) {
		var rep usagev1.LimitReport
		if err := proto.Unmarshal(m.Data, &rep); err != nil {
			l.log.Warn("limits: undecodable report", "subject", m.Subject, "err", err)
			return
		}
		// The subject names the sender; a report claiming another node
		// is not taken.
		if usagewire.LimitsSubject(rep.GetNode()) != m.Subject {
			return
		}
		l.Apply(time.Now(), &rep)
	})
	if err != nil {
		return fmt.Errorf("limits: subscribe: %w", err)
	}
	l.stop = make(chan struct{})
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		defer sub.Unsubscribe()
		subj := usagewire.LimitsSubject(l.cfg.Node)
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(backoff.Between(l.cfg.Interval/2, l.cfg.Interval*3/2)):
			}
			rep := l.Report(time.Now())
			b, err := proto.Marshal(rep)
			if err == nil {
				err = nc.Publish(subj, b)
			}
			if err != nil && nc.IsConnected() {
				l.log.Warn("limits: publish report", "err", err)
			}
		}
	}()
	return nil
}

// Close stops the exchange.
func (l *Limiter) Close() {
	if l.stop != nil {
		close(l.stop)
		l.done.Wait()
		l.stop = nil
	}
}
