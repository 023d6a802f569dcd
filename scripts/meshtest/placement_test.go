package meshtest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// testPlacement: placing tiny on edge A through the control API loads it
// there, and edge C, which runs no engine, serves it through a peer hop
// to A; removing the placement unloads it on A and C falls back to the
// route's provider.
func testPlacement(t *testing.T, m *mesh) {
	if m.noOllama != "" {
		t.Skip(m.noOllama)
	}
	fallback := m.upstreams["mock-ap-south"]
	a := m.chat(t, m.c, "tiny", keyOpen, "", `"max_tokens":8`)
	if a.status != 200 || routeField(a.route, "target") != "provider/mock-ap-south" {
		t.Fatalf("tiny before any placement: %d route %q: %s", a.status, a.route, a.body)
	}

	m.placeTiny(t)
	before := fallback.requests.Load()
	a = m.chat(t, m.c, "tiny", keyOpen, "", `"max_tokens":8`)
	if a.status != 200 || routeField(a.route, "target") != "peer/edge-a" || routeField(a.route, "kind") != "peer" {
		t.Fatalf("tiny at edge-c once placed on edge-a: %d route %q: %s", a.status, a.route, a.body)
	}
	var cc struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(a.body, &cc); err != nil || len(cc.Choices) != 1 || cc.Choices[0].Message.Content != enginetest.Expected(8) {
		t.Fatalf("tiny through the peer answered %s, want the tiny model's %q", a.body, enginetest.Expected(8))
	}
	// Streamed, chunk by chunk over the link.
	a = m.chat(t, m.c, "tiny", keyOpen, "", `"max_tokens":12,"stream":true`)
	if got := streamedContent(t, a.body); a.status != 200 || routeField(a.route, "target") != "peer/edge-a" || got != enginetest.Expected(12) {
		t.Fatalf("tiny streamed through the peer: %d route %q content %q, want %q", a.status, a.route, got, enginetest.Expected(12))
	}
	if n := fallback.requests.Load() - before; n != 0 {
		t.Errorf("the fallback provider received %d requests while the peer served", n)
	}
	// Edge A serves its own clients from its engine.
	if a := m.chat(t, m.a, "tiny", keyOpen, "", `"max_tokens":4`); a.status != 200 || routeField(a.route, "target") != "local" {
		t.Errorf("tiny at edge-a: %d route %q", a.status, a.route)
	}

	m.del(t, "placements", "tiny-on-a")
	wait.For(t, 30*time.Second, "tiny unloaded on edge-a", func() bool {
		_, placed := m.a.node.Engine().Models()["tiny"]
		return !m.a.node.Engine().ModelReady("tiny") && !placed
	})
	wait.For(t, gossipRepair, "edge-c to route tiny to its provider", m.planFirst(t, m.c, "tiny", "provider/mock-ap-south"))
	before = fallback.requests.Load()
	a = m.chat(t, m.c, "tiny", keyOpen, "", `"max_tokens":8`)
	if a.status != 200 || routeField(a.route, "target") != "provider/mock-ap-south" || routeField(a.route, "failed") != "" {
		t.Fatalf("tiny at edge-c once unplaced: %d route %q: %s", a.status, a.route, a.body)
	}
	if n := fallback.requests.Load() - before; n != 1 {
		t.Errorf("the fallback provider received %d requests, want 1", n)
	}
	if x := m.explain(t, m.c, "tiny"); len(x.Targets) != 1 {
		t.Errorf("edge-c still plans %v for tiny", x.targets())
	}
}

// placeTiny places tiny on edge A and waits until A serves it and C
// plans the hop to A first.
func (m *mesh) placeTiny(t *testing.T) {
	t.Helper()
	m.put(t, "placements", "tiny-on-a", map[string]any{"id": "tiny-on-a", "model": "tiny", "node": "edge-a", "desired": 1})
	wait.For(t, 60*time.Second, "tiny ready on edge-a", func() bool { return m.a.node.Engine().ModelReady("tiny") })
	wait.For(t, gossipRepair, "edge-c to plan tiny on peer/edge-a first", m.planFirst(t, m.c, "tiny", "peer/edge-a"))
}

// streamedContent joins the content of an OpenAI chat stream's chunks;
// it fails the test on a stream that does not end with [DONE].
func streamedContent(t *testing.T, body []byte) string {
	t.Helper()
	var sb strings.Builder
	done := false
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("stream event %q: %v", data, err)
		}
		for _, c := range chunk.Choices {
			sb.WriteString(c.Delta.Content)
		}
	}
	if !done {
		t.Fatalf("stream without [DONE]: %s", body)
	}
	return sb.String()
}
