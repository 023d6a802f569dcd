package link

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSilentPeerDeclaredDead kills a peer abruptly (Kill: its socket
// closes before anything else, so no close packet reaches the survivor,
// which hears pure silence) while a request waits on it before its first
// byte. With the default pings the link is declared dead within
// max(4 × 200ms, 3 × RTT + 200ms), the waiting request fails over at
// once with a retryable error, the peer is Down and OnPeerDown fires.
// Directly on loopback and through the WAN relay at 40 ms one-way.
//
// The bounds asserted are twice the (1 s on loopback, 2 s
// through the relay): CI machines here are shared and run -race.
func TestSilentPeerDeclaredDead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		bound time.Duration
	}{
		{"loopback", 0, 2 * time.Second},
		{"wan 40ms", 40 * time.Millisecond, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t)
			// A request that says "waits" waits for its cancellation.
			rec := newRecorder()
			called := make(chan struct{}, 1)
			b := startTransport(t, c.config(t, "edge-b"), func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
				if strings.Contains(string(req.Body), "waits") {
					called <- struct{}{}
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return rec.handle(ctx, req)
			})
			addr := b.Addr().String()
			if tc.delay > 0 {
				r, err := relay.Start(relay.Config{Target: addr, UDPListen: "127.0.0.1:0", Delay: tc.delay})
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				addr = r.UDPAddr()
			}
			acfg := c.config(t, "edge-a")
			var downs atomic.Int32
			downAt := make(chan time.Time, 10)
			acfg.OnPeerDown = func(node string, err error) {
				if node == "edge-b" {
					downs.Add(1)
					downAt <- time.Now()
				}
			}
			a := startTransport(t, acfg, nil)
			p, err := a.Peer("edge-b", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			// Warm the link and let pings measure its RTT.
			if _, err := p.Do(context.Background(), chatReq(false, "warm"), "gpt"); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 5*time.Second, "an RTT", func() bool { return a.RTT("edge-b") > 0 })
			if rtt := a.RTT("edge-b"); tc.delay > 0 && rtt < 2*tc.delay {
				t.Errorf("RTT %v through a relay of %v one-way", rtt, tc.delay)
			}

			type result struct {
				err  error
				when time.Time
			}
			done := make(chan result, 1)
			go func() {
				_, err := p.Do(context.Background(), chatReq(true, "waits"), "gpt")
				done <- result{err, time.Now()}
			}()
			<-called
			b.Kill()
			killed := time.Now()

			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the waiting request never failed")
			}
			var e *llm.Error
			if !errors.As(res.err, &e) || !e.Retryable || e.Status != http.StatusBadGateway {
				t.Fatalf("waiting request: %v; want a retryable 502", res.err)
			}
			wait.For(t, tc.bound, "the link down", func() bool { return a.Down("edge-b") })
			detected := time.Since(killed)
			if d := res.when.Sub(killed); d > tc.bound {
				t.Errorf("the waiting request failed %v after the kill; bound %v", d, tc.bound)
			}
			select {
			case at := <-downAt:
				t.Logf("%s: link declared dead %v after the kill (RTT %v), request failed over after %v",
					tc.name, at.Sub(killed).Round(time.Millisecond), a.RTT("edge-b").Round(time.Millisecond), res.when.Sub(killed).Round(time.Millisecond))
			case <-time.After(time.Second):
				t.Errorf("OnPeerDown not called (down %v after the kill)", detected)
			}
			if v := counterValue(a.met.silent.WithLabelValues("edge-b")); v != 1 {
				t.Errorf("meridian_link_unresponsive_total %v, want 1", v)
			}
			if _, err := p.Do(context.Background(), chatReq(false, "after"), "gpt"); !errors.Is(err, ErrPeerDown) {
				t.Fatalf("request to the dead peer: %v", err)
			}
		})
	}
}

// TestKilledPeerRestartReconnects: a peer killed abruptly and restarted
// on the same address with a new process (new ticket keys, empty replay
// cache) is linked again within about RedialMax + RedialTimeout of
// coming back, after a handshake and a probe; the first request runs
// exactly once, its 0-RTT attempt refused.
func TestKilledPeerRestartReconnects(t *testing.T) {
	c := newTestCluster(t)
	bcfg := c.config(t, "edge-b")
	b := startTransport(t, bcfg, newRecorder().handle)
	addr := b.Addr().String()
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	if _, err := p.Do(context.Background(), chatReq(false, "first"), "gpt"); err != nil {
		t.Fatal(err)
	}
	b.Kill()
	wait.For(t, 5*time.Second, "the link down", func() bool { return a.Down("edge-b") })
	rec := newRecorder()
	var b2 *Transport
	var lerr error
	bcfg.Registerer = prometheus.NewRegistry()
	wait.For(t, 5*time.Second, "the port to rebind", func() bool {
		b2, lerr = Listen(bcfg, addr)
		return lerr == nil
	})
	t.Cleanup(func() { b2.Close() })
	if err := b2.Serve(rec.handle); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// RedialMax + RedialTimeout is the bound; twice that for -race on a
	// shared machine.
	wait.For(t, 4*time.Second, "the link restored", func() bool { return a.Healthy("edge-b") && !a.Down("edge-b") })
	t.Logf("restarted peer linked again %v after it came back", time.Since(back).Round(time.Millisecond))
	if _, err := p.Do(context.Background(), chatReq(false, "after restart"), "gpt"); err != nil {
		t.Fatalf("request to the restarted peer: %v", err)
	}
	if n := rec.count(); n != 1 {
		t.Fatalf("the first request ran %d times on the restarted peer", n)
	}
}
