package meshtest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// testMove: tiny, placed on edge A, moves to edge B in one step (the
// placement's node changes in place) while a client sends to every edge
// throughout. Make before break: A keeps serving until B has the model
// ready, so no request fails and none falls back to the route's
// provider; then A unloads it and B answers.
func testMove(t *testing.T, m *mesh) {
	if m.noOllama != "" {
		t.Skip(m.noOllama)
	}
	m.placeTiny(t)
	wait.For(t, gossipRepair, "edge-b to plan tiny on peer/edge-a first", m.planFirst(t, m.b, "tiny", "peer/edge-a"))

	var (
		mu       sync.Mutex
		sent     int
		failures []string
		served   = map[string]int{}
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	deadline := time.Now().Add(90 * time.Second)
	go func() {
		defer close(done)
		body := `{"model":"tiny","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}`
		for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			e := m.edges[i%len(m.edges)]
			status, route, err := postOnce(m.client, e.url+"/v1/chat/completions", body)
			target := routeField(route, "target")
			mu.Lock()
			sent++
			switch {
			case err != nil:
				failures = append(failures, fmt.Sprintf("%s: %v", e.id, err))
			case status != http.StatusOK || strings.HasPrefix(target, "provider/"):
				failures = append(failures, fmt.Sprintf("%s: %d route %q", e.id, status, route))
			default:
				served[e.id+"->"+target]++
			}
			mu.Unlock()
		}
	}()
	finish := func() {
		close(stop)
		<-done
	}

	time.Sleep(300 * time.Millisecond) // some requests before the move
	m.put(t, "placements", "tiny-on-a", map[string]any{"id": "tiny-on-a", "model": "tiny", "node": "edge-b", "desired": 1})
	wait.For(t, 60*time.Second, "tiny ready on edge-b", func() bool { return m.b.node.Engine().ModelReady("tiny") })
	wait.For(t, 30*time.Second, "tiny unloaded on edge-a", func() bool {
		_, placed := m.a.node.Engine().Models()["tiny"]
		return !m.a.node.Engine().ModelReady("tiny") && !placed
	})
	wait.For(t, gossipRepair, "edge-c to plan tiny on peer/edge-b first", m.planFirst(t, m.c, "tiny", "peer/edge-b"))
	time.Sleep(500 * time.Millisecond) // some requests after the move
	finish()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("move: %d requests, served %v", sent, served)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed or left the fleet during the move; first: %v", len(failures), sent, failures[:min(5, len(failures))])
	}
	if sent < 20 {
		t.Errorf("only %d requests sent during the move", sent)
	}
	if a := m.chat(t, m.c, "tiny", keyOpen, "", `"max_tokens":4`); a.status != 200 || routeField(a.route, "target") != "peer/edge-b" {
		t.Errorf("tiny at edge-c after the move: %d route %q", a.status, a.route)
	}
	if a := m.chat(t, m.b, "tiny", keyOpen, "", `"max_tokens":4`); a.status != 200 || routeField(a.route, "target") != "local" {
		t.Errorf("tiny at edge-b after the move: %d route %q", a.status, a.route)
	}

	m.del(t, "placements", "tiny-on-a")
	wait.For(t, 30*time.Second, "tiny unloaded on edge-b", func() bool {
		_, placed := m.b.node.Engine().Models()["tiny"]
		return !m.b.node.Engine().ModelReady("tiny") && !placed
	})
}

// postOnce posts one chat request with the open key; it never fails the
// test, so the senders' goroutines can use it.
func postOnce(c *http.Client, url, body string) (status int, route string, err error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+keyOpen)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, "", err
	}
	return resp.StatusCode, resp.Header.Get("X-Meridian-Route"), nil
}
