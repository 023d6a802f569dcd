package meshtest

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// testBreaker: provider flaky fails 30% of requests with 503 and steady
// is healthy. 2,000 requests through edge B see no error; flaky's
// breaker opens and half-opens with one probe at a time; and while
// flaky is down for good it sees at most one request per cooldown.
func testBreaker(t *testing.T, m *mesh) {
	const (
		total       = 2000
		concurrency = 16
	)
	flaky, steady := m.upstreams["flaky"], m.upstreams["steady"]
	stats := m.b.node.Gateway().Router().Stats("provider/flaky")
	opened0, probes0 := stats.Opened(), stats.Probes()
	flaky.failPercent.Store(30)
	defer flaky.failPercent.Store(0)

	var (
		next, failed, viaSteady atomic.Int64
		mu                      sync.Mutex
		firstErr                string
		sawOpen                 atomic.Bool
		wg                      sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total && time.Now().Before(deadline) {
				status, route, err := m.quickChat(m.b, "flaky-chat")
				if err != nil || status != 200 {
					if failed.Add(1) == 1 {
						mu.Lock()
						firstErr = strings.TrimSpace(route)
						if err != nil {
							firstErr = err.Error()
						}
						mu.Unlock()
					}
					continue
				}
				if strings.Contains(route, "target=provider/steady;") {
					viaSteady.Add(1)
				}
				if strings.Contains(route, "provider/flaky(breaker-open)") {
					sawOpen.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	sent := min(next.Load()-concurrency, total)
	t.Logf("%d requests in %v: flaky saw %d, steady %d; breaker opened %d times, %d half-open probes",
		sent, took.Round(time.Millisecond), flaky.requests.Load(), steady.requests.Load(), stats.Opened()-opened0, stats.Probes()-probes0)
	if sent < total {
		t.Fatalf("only %d of %d requests within the time bound", sent, total)
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed at the client; first: %s", n, total, firstErr)
	}
	if stats.Opened() == opened0 || !sawOpen.Load() {
		t.Errorf("flaky's breaker never opened (opened %d times; a route named it open: %v)", stats.Opened()-opened0, sawOpen.Load())
	}
	if stats.Probes() == probes0 {
		t.Errorf("flaky's breaker never half-opened for a probe")
	}
	// A half-open breaker admits one probe, which closes or reopens it.
	if p, o := stats.Probes()-probes0, stats.Opened()-opened0; p > o {
		t.Errorf("%d probes for %d openings: a half-open breaker let more than one request through", p, o)
	}

	// flaky down for good: steady traffic for a second gives it the
	// requests that open its breaker, then one probe per cooldown.
	flaky.down.Store(true)
	defer flaky.down.Store(false)
	wait.For(t, 10*time.Second, "flaky's breaker open", func() bool {
		m.quickChat(m.b, "flaky-chat")
		return stats.State(time.Now()) == "open"
	})
	before, window := flaky.requests.Load(), time.Second
	var errs atomic.Int64
	wg = sync.WaitGroup{}
	end := time.Now().Add(window)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && time.Now().Before(end); i++ {
				if status, _, err := m.quickChat(m.b, "flaky-chat"); err != nil || status != 200 {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	got := flaky.requests.Load() - before
	// One probe per cooldown, and one more for the window's edges.
	if limit := int64(window/breakerCooldown) + 1; got > limit {
		t.Errorf("flaky, down, received %d requests in %v with a %v cooldown; want at most %d", got, window, breakerCooldown, limit)
	}
	if got == 0 {
		t.Errorf("flaky, down, received no probe in %v with a %v cooldown", window, breakerCooldown)
	}
	if n := errs.Load(); n != 0 {
		t.Errorf("%d requests failed while flaky was down and steady up", n)
	}

	// The dry run and the metric say so.
	x := m.explain(t, m.b, "flaky-chat")
	ex, excluded := x.excluded("provider/flaky")
	half := len(x.Targets) == 2 && x.Targets[0].Target == "provider/flaky" && x.Targets[0].Breaker == "half-open"
	if !(excluded && ex.Reason == "breaker-open" && ex.Breaker == "open") && !half {
		t.Errorf("dry run with flaky down: targets %+v excluded %+v", x.Targets, x.Excluded)
	}
	metrics := m.get(t, m.b, "/metrics")
	if !strings.Contains(metrics, `meridian_breaker_state{target="provider/flaky"} 2`) && !strings.Contains(metrics, `meridian_breaker_state{target="provider/flaky"} 1`) {
		t.Errorf("metrics do not show flaky's breaker open or half-open")
	}
	if !strings.Contains(metrics, `meridian_breaker_state{target="provider/steady"} 0`) {
		t.Errorf("metrics do not show steady's breaker closed")
	}
}

// quickChat is a small request that reports rather than fails, for load.
func (m *mesh) quickChat(e *edge, model string) (status int, route string, err error) {
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","max_tokens":4,"messages":[{"role":"user","content":"hi #mock chunks=2"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+keyOpen)
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	route = resp.Header.Get("X-Meridian-Route")
	if resp.StatusCode != 200 {
		route += " " + string(b)
	}
	return resp.StatusCode, route, nil
}

// get returns a GET's body.
func (m *mesh) get(t *testing.T, e *edge, path string) string {
	t.Helper()
	resp, err := m.client.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
