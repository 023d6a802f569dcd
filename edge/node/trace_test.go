package node

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/testkit/otlpsink"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
)

// TestTraceAcrossLink: a request a client sends to edge A with a W3C
// traceparent, which A forwards over the link to edge B, which asks its
// mock provider, arrives at an OTLP receiver as one trace: the client's
// trace ID on every span, each span's parent the one before it across
// both edges, and the GenAI attributes on the calls. Both edges log the
// request under the same request ID.
func TestTraceAcrossLink(t *testing.T) {
	sink := otlpsink.Start(t)
	p := startLinkPairWith(t, func(c *config.Config) {
		c.Telemetry.OTLPEndpoint = sink.URL
		c.Telemetry.BatchTimeout = 50 * time.Millisecond
	})
	const (
		traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpanID = "00f067aa0ba902b7"
		requestID    = "req-trace-across-link"
	)
	body := chatBody("gpt-4o-mini", "hello over the link", `"max_tokens":20,"temperature":0.5`)
	resp := p.a.post("/v1/chat/completions", body,
		"Traceparent", "00-"+traceID+"-"+clientSpanID+"-01", "X-Request-Id", requestID)
	b := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if route := resp.Header.Get("X-Meridian-Route"); !strings.Contains(route, "target=peer/edge-b") {
		t.Fatalf("request was not forwarded to B: %s", route)
	}

	// server on A → route on A → link hop (client) on A → serving on B
	// → route on B → provider call (client) on B.
	type hop struct {
		node, name string
		kind       tracev1.Span_SpanKind
	}
	chain := []hop{
		{"edge-a", "POST /v1/chat/completions", tracev1.Span_SPAN_KIND_SERVER},
		{"edge-a", "meridian.route", tracev1.Span_SPAN_KIND_INTERNAL},
		{"edge-a", "chat gpt-4o-mini", tracev1.Span_SPAN_KIND_CLIENT},
		{"edge-b", "meridian.link.serve gpt-4o-mini", tracev1.Span_SPAN_KIND_SERVER},
		{"edge-b", "meridian.route", tracev1.Span_SPAN_KIND_INTERNAL},
		{"edge-b", "chat gpt-4o-mini", tracev1.Span_SPAN_KIND_CLIENT},
	}
	find := func(spans []otlpsink.Span, h hop, parent string) (otlpsink.Span, bool) {
		for _, s := range spans {
			if s.Node == h.node && s.Name == h.name && s.Kind == h.kind && s.ParentID == parent {
				return s, true
			}
		}
		return otlpsink.Span{}, false
	}
	var got []otlpsink.Span
	wait.For(t, 30*time.Second, "the forwarded request's six spans at the receiver", func() bool {
		got = sink.Trace(traceID)
		return len(got) >= len(chain)
	})
	// The batcher may deliver the spans of one trace in several posts;
	// wait until the whole chain is there before judging its links.
	wait.For(t, 30*time.Second, "the chain of spans, each the parent of the next", func() bool {
		got = sink.Trace(traceID)
		parent := clientSpanID
		for _, h := range chain {
			s, ok := find(got, h, parent)
			if !ok {
				return false
			}
			parent = s.SpanID
		}
		return true
	})
	spans := make([]otlpsink.Span, len(chain))
	parent := clientSpanID
	for i, h := range chain {
		spans[i], _ = find(got, h, parent)
		parent = spans[i].SpanID
	}
	for _, s := range got {
		if s.Error {
			t.Errorf("span %q on %s has an error status: %v", s.Name, s.Node, s.Attrs)
		}
	}
	for _, s := range spans {
		if s.Service != "meridian-edge" {
			t.Errorf("span %q: service.name %q", s.Name, s.Service)
		}
	}

	want := func(s otlpsink.Span, attrs map[string]string) {
		t.Helper()
		for k, v := range attrs {
			got, ok := s.Attrs[k]
			switch {
			case !ok:
				t.Errorf("%s %q: no attribute %s; has %v", s.Node, s.Name, k, s.Attrs)
			case v != "*" && got != v:
				t.Errorf("%s %q: %s = %q, want %q", s.Node, s.Name, k, got, v)
			case v == "*" && (got == "" || got == "0"):
				t.Errorf("%s %q: %s is empty", s.Node, s.Name, k)
			}
		}
	}
	genAI := map[string]string{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "*",
		"gen_ai.request.max_tokens": "20", "gen_ai.request.temperature": "0.5",
		"gen_ai.usage.input_tokens": "*", "gen_ai.usage.output_tokens": "*",
	}
	want(spans[0], genAI)
	want(spans[0], map[string]string{"meridian.request_id": requestID, "http.response.status_code": "200", "meridian.route.kind": "peer"})
	want(spans[1], map[string]string{"meridian.route.target": "peer/edge-b", "meridian.route.candidates": "*", "meridian.route.reason": "primary"})
	want(spans[2], genAI)
	want(spans[2], map[string]string{"gen_ai.provider.name": "meridian", "gen_ai.system": "meridian", "meridian.route.kind": "peer"})
	want(spans[3], genAI)
	want(spans[3], map[string]string{"meridian.request_id": requestID, "meridian.via": "edge-a"})
	want(spans[4], map[string]string{"meridian.route.target": "provider/mock", "meridian.route.kind": "provider"})
	want(spans[5], genAI)
	want(spans[5], map[string]string{"gen_ai.provider.name": "openai", "gen_ai.system": "openai", "meridian.route.kind": "provider"})

	// A streamed request: B's provider span ends with the stream, with
	// its usage.
	resp = p.a.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hi #mock chunks=4", `"stream":true,"stream_options":{"include_usage":true}`),
		"X-Request-Id", "req-trace-stream")
	readBody(t, resp)
	wait.For(t, 30*time.Second, "the streamed request's provider span on B, with usage", func() bool {
		for _, s := range sink.Spans() {
			if s.Node == "edge-b" && s.Kind == tracev1.Span_SPAN_KIND_CLIENT && s.Attrs["meridian.stream.chunks"] != "" &&
				s.Attrs["gen_ai.usage.output_tokens"] != "" {
				return true
			}
		}
		return false
	})

	// One log line per request on each edge, joined by request ID and
	// naming the trace.
	line := func(m *testMesh, field, value string) map[string]any {
		t.Helper()
		var found map[string]any
		wait.For(t, 10*time.Second, m.node.cfg.NodeID+"'s request log line", func() bool {
			for _, l := range strings.Split(m.logs.String(), "\n") {
				var v map[string]any
				if json.Unmarshal([]byte(l), &v) != nil || v["msg"] != "request" || v["request_id"] != requestID {
					continue
				}
				if v[field] == value {
					found = v
					return true
				}
			}
			return false
		})
		return found
	}
	la := line(p.a, "target", "peer/edge-b")
	lb := line(p.b, "via", "edge-a")
	for _, l := range []map[string]any{la, lb} {
		if l["model"] != "gpt-4o-mini" || l["status"] != "200" || l["trace_id"] != traceID || l["tokens_in"] == nil || l["tokens_out"] == nil {
			t.Errorf("log line lacks model, status, usage or trace: %v", l)
		}
	}
	if la["kind"] != "peer" || lb["kind"] != "provider" || lb["target"] != "provider/mock" {
		t.Errorf("routes: A logged %v/%v, B %v/%v", la["kind"], la["target"], lb["kind"], lb["target"])
	}
}
