package limits

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func newLimiter(t *testing.T, node string) *Limiter {
	t.Helper()
	c := DefaultConfig()
	c.Node = node
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var key = Subject{KindKey, "k1"}

func TestLocalRequestsPerMinute(t *testing.T) {
	l := newLimiter(t, "a")
	now := time.Unix(1_700_000_000, 0)
	checks := []Check{{Subject: key, RPM: 3}}
	for i := range 3 {
		v := l.Admit(now, checks, 0)
		if !v.Allowed {
			t.Fatalf("request %d refused under the limit", i+1)
		}
		if v.Requests.Remaining != int64(2-i) || v.Requests.Limit != 3 {
			t.Fatalf("request %d: remaining %d of %d, want %d of 3", i+1, v.Requests.Remaining, v.Requests.Limit, 2-i)
		}
	}
	v := l.Admit(now, checks, 0)
	if v.Allowed || v.Tokens || v.RetryAfter <= 0 || v.RetryAfter > time.Minute {
		t.Fatalf("4th request: %+v, want refused for requests with a retry within the minute", v)
	}
	// A minute later the window has moved on.
	if v := l.Admit(now.Add(time.Minute+time.Second), checks, 0); !v.Allowed {
		t.Fatalf("request after the window refused: %+v", v)
	}
}

func TestLocalTokensCorrected(t *testing.T) {
	l := newLimiter(t, "a")
	now := time.Unix(1_700_000_000, 0)
	ten := Subject{KindTenant, "t1"}
	checks := []Check{{Subject: key, TPM: 1000}, {Subject: ten, RPM: 100}}
	if v := l.Admit(now, checks, 400); !v.Allowed || v.TokenState.Remaining != 600 || v.Requests.Remaining != 99 {
		t.Fatalf("first: %+v", v)
	}
	// The answer used 900 tokens, not 400.
	l.Correct(now, checks, 500)
	if _, toks := l.Used(now, key); toks != 900 {
		t.Fatalf("used %d tokens after correction, want 900", toks)
	}
	if v := l.Admit(now, checks, 200); v.Allowed || !v.Tokens {
		t.Fatalf("request past the corrected use: %+v, want refused for tokens", v)
	}
	// A refusal charges nothing: the tenant's requests did not move.
	if reqs, _ := l.Used(now, ten); reqs != 1 {
		t.Fatalf("tenant used %d requests, want 1", reqs)
	}
	// A low estimate corrected down frees room.
	l.Correct(now, checks, -800)
	if v := l.Admit(now, checks, 200); !v.Allowed {
		t.Fatalf("refused after the use was corrected down: %+v", v)
	}
}

func TestNoLimitNoCount(t *testing.T) {
	l := newLimiter(t, "a")
	now := time.Now()
	v := l.Admit(now, []Check{{Subject: key}}, 10)
	if !v.Allowed || v.Requests.Has || v.TokenState.Has {
		t.Fatalf("unlimited subject: %+v", v)
	}
	if rep := l.Report(now); len(rep.Uses) != 0 {
		t.Fatalf("unlimited subject reported: %v", rep.Uses)
	}
}

func TestReportsShareTheLimit(t *testing.T) {
	a, b := newLimiter(t, "a"), newLimiter(t, "b")
	now := time.Unix(1_700_000_000, 0)
	checks := []Check{{Subject: key, RPM: 10}}
	for range 7 {
		a.Admit(now, checks, 0)
	}
	b.Apply(now, a.Report(now))
	for i := range 3 {
		if v := b.Admit(now, checks, 0); !v.Allowed {
			t.Fatalf("b's request %d refused with 7 of 10 used on a", i+1)
		}
	}
	if v := b.Admit(now, checks, 0); v.Allowed {
		t.Fatal("b admitted an 11th request")
	}
	// A report replaces the previous one; an old one is forgotten.
	a2 := newLimiter(t, "a")
	b.Apply(now, a2.Report(now))
	if reqs, _ := b.Used(now, key); reqs != 3 {
		t.Fatalf("b sees %d requests after a's empty report, want its own 3", reqs)
	}
	// Its own reports are never applied.
	b.Apply(now, b.Report(now))
	if reqs, _ := b.Used(now, key); reqs != 3 {
		t.Fatalf("b counted its own report: %d", reqs)
	}
}

// natsServer starts an embedded NATS server on a free loopback port.
func natsServer(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// TestGlobalOvershootBound runs three limiters exchanging reports
// through a real NATS server. Traffic comes in rounds: in each, every
// edge tries k requests for one key, then the test waits until every
// edge has seen every other's latest use. The others' admissions of the
// current round are exactly what an edge has not seen, so the package's
// bound is: total ≤ L + (N−1)·k, and the limit is reached (no edge
// refuses while the fleet is under it).
func TestGlobalOvershootBound(t *testing.T) {
	ns := natsServer(t)
	const (
		n     = 3
		limit = 100
		k     = 10
	)
	ls := make([]*Limiter, n)
	for i := range ls {
		c := DefaultConfig()
		c.Node, c.Interval = fmt.Sprintf("edge-%d", i), 20*time.Millisecond
		l, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if err := l.Start(nc); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		ls[i] = l
	}
	checks := []Check{{Subject: key, RPM: limit}}
	admitted := make([]int64, n)
	total := func() (s int64) {
		for _, a := range admitted {
			s += a
		}
		return s
	}
	for round := 0; round < 2*limit/(n*k)+4; round++ {
		for range k {
			for i, l := range ls {
				if l.Admit(time.Now(), checks, 0).Allowed {
					admitted[i]++
				}
			}
		}
		want := total()
		wait.For(t, 15*time.Second, "every edge to see the fleet's use", func() error {
			for i, l := range ls {
				if got, _ := l.Used(time.Now(), key); got != want {
					return fmt.Errorf("edge %d sees %d requests of %d admitted", i, got, want)
				}
			}
			return nil
		})
		if want > limit+(n-1)*k {
			t.Fatalf("round %d: %d admitted, above the bound %d + (%d−1)·%d", round, want, limit, n, k)
		}
	}
	if got := total(); got < limit {
		t.Fatalf("%d admitted in all, below the limit %d: the fleet refused while under it", got, limit)
	}
	t.Logf("admitted %v, total %d of limit %d (bound %d)", admitted, total(), limit, limit+(n-1)*k)
}

func BenchmarkAdmitAndCorrect(b *testing.B) {
	l := newLimiter(&testing.T{}, "a")
	checks := []Check{{Subject: key, RPM: 1 << 40, TPM: 1 << 50}, {Subject: Subject{KindTenant, "t1"}, RPM: 1 << 40, TPM: 1 << 50}}
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		if !l.Admit(now, checks, 100).Allowed {
			b.Fatal("refused")
		}
		l.Correct(now, checks, 10)
	}
}
