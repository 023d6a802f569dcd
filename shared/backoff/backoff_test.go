package backoff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestDelayGrowsToCap(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Delay(i); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := p.Delay(1000); got != time.Second {
		t.Errorf("Delay(1000) = %v, want the cap", got)
	}
	if got := (Policy{Base: time.Second, Max: time.Millisecond}).Delay(3); got != time.Second {
		t.Errorf("Max below Base: got %v, want Base", got)
	}
}

func TestDelayJitterBounds(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: 800 * time.Millisecond, Jitter: 0.5, Rand: rand.New(rand.NewPCG(1, 2))}
	for attempt := range 6 {
		d := min(100*time.Millisecond<<attempt, 800*time.Millisecond)
		lo, hi := d/2, d+d/2
		seenLow, seenHigh := false, false
		for range 2000 {
			got := p.Delay(attempt)
			if got < lo || got > hi {
				t.Fatalf("Delay(%d) = %v, outside [%v, %v]", attempt, got, lo, hi)
			}
			seenLow = seenLow || got < d-d/4
			seenHigh = seenHigh || got > d+d/4
		}
		if !seenLow || !seenHigh {
			t.Errorf("Delay(%d): jitter does not spread across its range", attempt)
		}
	}
}

func TestSeededSourceIsDeterministic(t *testing.T) {
	run := func() []time.Duration {
		p := Policy{Base: time.Millisecond, Max: time.Second, Jitter: 0.5, Rand: rand.New(rand.NewPCG(7, 7))}
		var out []time.Duration
		for i := range 12 {
			out = append(out, p.Delay(i))
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("attempt %d: %v then %v with the same seed", i, a[i], b[i])
		}
	}
}

func TestSpreadAndBetween(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		if got := spread(r, time.Second, 0.2); got < 800*time.Millisecond || got > 1200*time.Millisecond {
			t.Fatalf("spread(1s, 0.2) = %v", got)
		}
		if got := between(r, 2*time.Second, 3*time.Second); got < 2*time.Second || got > 3*time.Second {
			t.Fatalf("between(2s, 3s) = %v", got)
		}
		if got := Spread(time.Second, 0.1); got < 900*time.Millisecond || got > 1100*time.Millisecond {
			t.Fatalf("Spread(1s, 0.1) = %v", got)
		}
	}
	if got := Between(time.Second, time.Millisecond); got != time.Second {
		t.Errorf("Between with hi < lo = %v, want lo", got)
	}
	if got := Spread(time.Second, 0); got != time.Second {
		t.Errorf("Spread with no jitter = %v", got)
	}
}
