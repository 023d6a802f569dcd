// Package backoff is Meridian's one way to wait before trying again and
// to spread timers that many nodes start together: an exponential
// Policy with a cap and proportional jitter, and Spread and Between for
// periodic timers. Both binaries use it.
//
// It only computes durations; it never sleeps, holds a timer or retries
// on its own, so each caller keeps its own loop, clock and stop signal.
//
// Why not github.com/cenkalti/backoff/v5: its ExponentialBackOff is a
// stateful object with its own clock and elapsed-time limit, and most
// of Meridian's callers only need a randomised period, which it does
// not offer. The arithmetic here is a few lines; a dependency would not
// make it shorter.
//
// The random source is math/rand/v2's (seeded from the OS): jitter needs
// spread, not secrecy. Tests inject a seeded Source for determinism.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Source is a random source; *rand.Rand from math/rand/v2 is one.
type Source interface {
	// Int64N returns a uniform value in [0, n); n > 0.
	Int64N(n int64) int64
}

type global struct{}

func (global) Int64N(n int64) int64 { return rand.Int64N(n) }

// Policy is an exponential backoff: attempt 0 waits Base, each further
// attempt doubles the wait, up to Max. Jitter (0 to 1) then varies each
// wait uniformly by up to that fraction either way, so clients that
// failed together do not retry together: 0.5 gives [d/2, 3d/2].
type Policy struct {
	Base   time.Duration
	Max    time.Duration
	Jitter float64
	// Rand is the random source; nil means math/rand/v2's.
	Rand Source
}

// Delay returns the wait before retry number attempt (0 for the first).
// A Max below Base is taken as Base.
func (p Policy) Delay(attempt int) time.Duration {
	d := max(p.Base, 0)
	hi := max(p.Max, d)
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	return spread(p.src(), min(d, hi), p.Jitter)
}

func (p Policy) src() Source {
	if p.Rand == nil {
		return global{}
	}
	return p.Rand
}

// Spread returns d varied uniformly by up to frac of d either way:
// [d-frac·d, d+frac·d].
func Spread(d time.Duration, frac float64) time.Duration {
	return spread(global{}, d, frac)
}

// Between returns a uniform duration in [lo, hi]; hi below lo gives lo.
func Between(lo, hi time.Duration) time.Duration {
	return between(global{}, lo, hi)
}

func spread(r Source, d time.Duration, frac float64) time.Duration {
	frac = min(max(frac, 0), 1)
	j := time.Duration(frac * float64(d))
	return between(r, d-j, d+j)
}

func between(r Source, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}
