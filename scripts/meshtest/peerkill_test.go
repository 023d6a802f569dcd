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

// testPeerKilled: edge A, serving tiny to edge C's clients, dies
// abruptly under load: its gossip stops without a leave and its links
// close. No request that had not started streaming fails: C fails over
// to the route's provider before the first byte, and plans around A
// once it knows.
func testPeerKilled(t *testing.T, m *mesh) {
	if m.noOllama != "" {
		t.Skip(m.noOllama)
	}
	m.placeTiny(t)

	type outcome struct {
		status    int
		route     string
		err       error // before the response headers
		cut       bool  // streaming began, then the stream broke
		afterKill bool  // sent after the kill
		took      time.Duration
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		killed   atomic.Bool
		peerOK   atomic.Int64 // served by A before the kill
		afterOK  atomic.Int64 // served after the kill
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(40 * time.Second)
	stop := make(chan struct{})
	body := `{"model":"tiny","max_tokens":24,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				o := outcome{afterKill: killed.Load()}
				began := time.Now()
				req, _ := http.NewRequest(http.MethodPost, m.c.url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+keyOpen)
				resp, err := m.client.Do(req)
				if err != nil {
					o.err = err
				} else {
					o.status, o.route = resp.StatusCode, resp.Header.Get("X-Meridian-Route")
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					o.cut = o.status == 200 && (rerr != nil || !strings.Contains(string(b), "data: [DONE]"))
					if o.status == 200 && !o.cut {
						switch {
						case o.afterKill:
							afterOK.Add(1)
						case strings.Contains(o.route, "target=peer/edge-a;"):
							peerOK.Add(1)
						}
					}
				}
				o.took = time.Since(began)
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}
		}()
	}
	wait.For(t, 30*time.Second, "edge-c's clients served by edge-a", func() bool { return peerOK.Load() >= 6 })

	// Kill A as a crash would: no gossip leave, links gone at once.
	// Requests sent meanwhile count as sent before it.
	m.a.node.Gossip().Kill()
	m.a.node.Link().Close()
	killed.Store(true)
	killedAt := time.Now()

	wait.For(t, 30*time.Second, "requests served after the kill", func() bool { return afterOK.Load() >= 15 })
	close(stop)
	wg.Wait()
	m.a.shutdown(t)

	var viaPeer, viaProvider, viaOther, failover, cut int
	var slowest time.Duration
	for _, o := range outcomes {
		if o.afterKill {
			slowest = max(slowest, o.took)
		}
		switch {
		case o.err != nil:
			t.Errorf("a request failed before its response began (sent after the kill: %v): %v", o.afterKill, o.err)
		case o.status != 200:
			t.Errorf("a request that had not started streaming failed (sent after the kill: %v): %d route %q", o.afterKill, o.status, o.route)
		case o.cut:
			cut++
			if o.afterKill {
				t.Errorf("a stream begun after the kill broke: route %q", o.route)
			}
		case strings.Contains(o.route, "target=peer/edge-a;"):
			viaPeer++
			if o.afterKill {
				t.Errorf("a request sent after the kill was served by the dead peer: route %q", o.route)
			}
		case strings.Contains(o.route, "target=provider/mock-ap-south;"):
			viaProvider++
			if strings.Contains(o.route, "reason=failover") {
				failover++
			}
		case o.afterKill && strings.Contains(o.route, "target=peer/edge-b;"):
			// Served, by a live edge: the user-facing promise holds. It
			// happens when edge-c's gossip still lists tiny ready on
			// edge-b from the move scenario; edge-b then serves it from
			// the route's provider. Logged, with what edge-c sees, until
			// that is understood.
			viaOther++
		default:
			t.Errorf("unexpected route %q", o.route)
		}
	}
	t.Logf("%d requests: %d served by edge-a, %d by the provider (%d after a failed attempt), %d through edge-b, %d streams cut mid-way by the kill; slowest sent after the kill: %v",
		len(outcomes), viaPeer, viaProvider, failover, viaOther, cut, slowest.Round(time.Millisecond))
	if viaOther > 0 {
		for _, mb := range m.c.node.Gossip().Members() {
			t.Logf("edge-c's gossip: %s %s ready=%v", mb.ID, mb.State, mb.ReadyModels)
		}
		t.Logf("edge-b's engine: ready %v, models %v", m.b.node.Engine().ReadyModels(), m.b.node.Engine().Models())
	}
	wait.For(t, gossipRepair, "edge-c to see edge-a gone", func() bool {
		x := m.explain(t, m.c, "tiny")
		ex, ok := x.excluded("peer/edge-a")
		return len(x.Targets) == 1 && x.Targets[0].Target == "provider/mock-ap-south" && ok && ex.Reason != ""
	})
	t.Logf("edge-c planned around edge-a %v after the kill", time.Since(killedAt).Round(time.Millisecond))
}
