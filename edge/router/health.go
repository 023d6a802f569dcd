package router

import (
	"sync/atomic"
	"time"
)

// Breaker states.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Stats is one target's health, shared by every request: its breaker,
// smoothed time to first token and requests in flight. It is lock-free.
//
// The breaker opens after Config.BreakerThreshold consecutive retryable
// failures. While open, the target is left out of plans. Once
// BreakerCooldown has passed it is half-open: plans include it again,
// but only one request at a time may try it (Begin admits one probe and
// turns the others away); the probe's success closes the breaker, its
// failure opens it for another cooldown.
type Stats struct {
	fails     atomic.Int32
	openUntil atomic.Int64 // unix ns; 0 when closed
	probing   atomic.Bool
	ttft      atomic.Int64 // EWMA, ns; 0 before the first sample
	ttftDev   atomic.Int64 // EWMA of |sample - ttft|, ns
	inFlight  atomic.Int32
	opened    atomic.Uint64 // times the breaker opened
	probes    atomic.Uint64 // half-open probes admitted
}

// State is the breaker's state at now.
func (s *Stats) State(now time.Time) string {
	u := s.openUntil.Load()
	switch {
	case u == 0:
		return BreakerClosed
	case now.UnixNano() < u:
		return BreakerOpen
	}
	return BreakerHalfOpen
}

// OpenUntil is when an open breaker turns half-open; zero when closed.
func (s *Stats) OpenUntil() time.Time {
	if u := s.openUntil.Load(); u != 0 {
		return time.Unix(0, u)
	}
	return time.Time{}
}

// Opened and Probes count breaker openings and half-open probes.
func (s *Stats) Opened() uint64 { return s.opened.Load() }
func (s *Stats) Probes() uint64 { return s.probes.Load() }

// TTFT is the smoothed time to first token, zero before any success.
func (s *Stats) TTFT() time.Duration { return time.Duration(s.ttft.Load()) }

// TTFTBudget is how long an attempt at the target may wait for its
// first byte before it is given up for the next candidate: a p99-ish
// estimate of its time to first token (EWMA + 4 × mean deviation, as
// TCP's RTO), doubled for margin, and never below floor. Zero when the
// target has no successful attempt yet: there is nothing to judge by.
func (s *Stats) TTFTBudget(floor time.Duration) time.Duration {
	t := s.ttft.Load()
	if t == 0 {
		return 0
	}
	return max(floor, 2*time.Duration(t+4*s.ttftDev.Load()))
}

// InFlight is the requests this node has at the target now.
func (s *Stats) InFlight() int { return int(s.inFlight.Load()) }

// Begin is called before an attempt. It returns false when the target's
// breaker is half-open and another request holds its one probe; the
// caller then skips the target. force admits the attempt regardless
// (the plan's last resort). A true Begin must be followed by End.
func (s *Stats) Begin(now time.Time, force bool) bool {
	if s.State(now) == BreakerHalfOpen && !force {
		if !s.probing.CompareAndSwap(false, true) {
			return false
		}
		s.probes.Add(1)
	}
	s.inFlight.Add(1)
	return true
}

// End records an attempt's outcome: ok with its time to first token
// (the attempt's duration so far, which dates its start), or a retryable
// failure (failed); a client error is neither and only ends the attempt.
func (s *Stats) End(now time.Time, ok, failed bool, ttft time.Duration, threshold int, cooldown time.Duration) {
	s.inFlight.Add(-1)
	switch {
	case ok:
		if u := s.openUntil.Load(); u != 0 && now.Add(-ttft).UnixNano() < u-int64(cooldown) {
			// Begun before the breaker opened, it says nothing of the
			// target since: only an attempt begun after (the probe, or
			// a last resort) may close the breaker.
			s.observe(ttft)
			return
		}
		if s.fails.Load() != 0 {
			s.fails.Store(0)
		}
		if s.openUntil.Load() != 0 {
			s.openUntil.Store(0)
		}
		s.probing.Store(false)
		s.observe(ttft)
	case failed:
		half := s.State(now) == BreakerHalfOpen
		if half || int(s.fails.Add(1)) >= threshold {
			s.openUntil.Store(now.Add(cooldown).UnixNano())
			s.fails.Store(0)
			s.opened.Add(1)
		}
		s.probing.Store(false)
	default:
		s.probing.Store(false)
	}
}

// observe folds a time to first token into the EWMA (alpha 1/8).
func (s *Stats) observe(d time.Duration) {
	if d <= 0 {
		return
	}
	for {
		old := s.ttft.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if s.ttft.CompareAndSwap(old, next) {
			if old != 0 {
				// The deviation (alpha 1/4) is advisory: a lost update
				// under contention costs nothing.
				dev := s.ttftDev.Load()
				diff := int64(d) - old
				if diff < 0 {
					diff = -diff
				}
				s.ttftDev.Store(dev + (diff-dev)/4)
			}
			return
		}
	}
}
