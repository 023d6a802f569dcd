package node

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// seriesCount counts the meridian_* sample lines of a /metrics scrape
// (histogram buckets included), so growth in any labelled family shows.
func seriesCount(scrape string) int {
	n := 0
	for _, l := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(l, "meridian_") {
			n++
		}
	}
	return n
}

// TestUnknownModelsAddNoSeries sends many distinct unknown model names on
// both surfaces: metric labels come only from the routing table, so
// /metrics must not grow a series per name.
func TestUnknownModelsAddNoSeries(t *testing.T) {
	m := startMesh(t, nil)
	// One unknown model first, so the "unknown" series exist before the
	// baseline is taken.
	send := func(i int) {
		model := fmt.Sprintf("no-such-model-%d", i)
		var resp *http.Response
		if i%2 == 0 {
			resp = m.post("/v1/chat/completions", chatBody(model, "hi", ""))
		} else {
			resp = m.post("/v1/messages", `{"model":"`+model+`","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
				"anthropic-version", "2023-06-01")
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("model %s: status %d, want 404", model, resp.StatusCode)
		}
	}
	send(0)
	send(1)
	before := seriesCount(m.metrics(t))
	const n = 1200
	for i := 2; i < n; i++ {
		send(i)
	}
	after := m.metrics(t)
	if got := seriesCount(after); got != before {
		t.Fatalf("%d unknown model names grew /metrics from %d to %d series:\n%s", n, before, got, grep(after, "no-such-model-1"))
	}
	if !strings.Contains(after, `model="unknown"`) {
		t.Fatalf(`unknown models are not counted under model="unknown":\n%s`, grep(after, "meridian_requests_total"))
	}
}

// TestDeepNestingRefusedInClientFormat sends a 4 MiB body of nested
// arrays to the OpenAI surface: it answers 400 in OpenAI's error shape,
// naming the depth limit.
func TestDeepNestingRefusedInClientFormat(t *testing.T) {
	m := startMesh(t, nil)
	head, tail := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":`, `}]}`
	depth := (4<<20 - len(head) - len(tail)) / 2
	body := head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + tail
	resp := m.post("/v1/chat/completions", body)
	b := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if e := decodeError(t, b); e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "nested deeper than 512") {
		t.Fatalf("error %+v", e.Error)
	}
}
