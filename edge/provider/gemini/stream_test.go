package gemini

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// memConn stands in for an upstream call when a stream reads from memory.
type memConn struct {
	touches int
	closed  bool
	drained bool
}

func (m *memConn) Touch() { m.touches++ }
func (m *memConn) ReadErr(err error) error {
	return fmt.Errorf("%w: %v", llm.ErrStreamCut, err)
}
func (m *memConn) Close(drained bool) { m.closed, m.drained = true, drained }

func memStream(sse string) (*stream, *memConn) {
	c := &memConn{}
	return newStream(c, strings.NewReader(sse), "gem", "fallback-model"), c
}

func ev(json string) string { return "data: " + json + "\r\n\r\n" }

func TestStreamCut(t *testing.T) {
	tests := []struct{ name, body string }{
		{"no finish", ev(`{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"responseId":"r"}`)},
		{"event broken off", ev(`{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"responseId":"r"}`) + `data: {"candidates":[{"content":{"parts":[{"text":"lo"}]`},
		{"empty", ""},
		{"one of two candidates finished", ev(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0,"finishReason":"STOP"},{"content":{"parts":[{"text":"b"}]},"index":1}]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := memStream(tt.body)
			var err error
			for range 10 {
				if _, err = s.Next(); err != nil {
					break
				}
			}
			if !errors.Is(err, llm.ErrStreamCut) {
				t.Fatalf("err = %v, want ErrStreamCut", err)
			}
			s.Close()
			if !c.closed || c.drained {
				t.Errorf("closed=%v drained=%v: a cut stream's connection must not be reused", c.closed, c.drained)
			}
		})
	}
}

func TestMidStreamError(t *testing.T) {
	tests := []struct {
		event  string
		status int
		typ    string
	}{
		{`{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, 503, llm.TypeOverloaded},
		{`{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}`, 429, llm.TypeRateLimit},
		{`{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}`, 502, llm.TypeUpstream},
	}
	for _, tt := range tests {
		s, _ := memStream(ev(`{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}]}`) + ev(tt.event))
		if c, err := s.Next(); err != nil || c.Choices[0].Content != "Hel" {
			t.Fatalf("first chunk: %v", err)
		}
		_, err := s.Next()
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != tt.status || e.Type != tt.typ || !strings.Contains(e.Message, "upstream provider") {
			t.Errorf("%s: err = %+v", tt.event, err)
		}
	}
}

func TestStreamTextOnly(t *testing.T) {
	s, c := memStream(
		": keep-alive\n\n" +
			ev(`{"candidates":[{"content":{"parts":[{"text":"Once"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4},"modelVersion":"gemini-2.0-flash-001","responseId":"abc"}`) +
			ev(`{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"index":0}],"modelVersion":"gemini-2.0-flash-001","responseId":"abc"}`) +
			ev(`{"candidates":[{"content":{"parts":[{"text":" upon"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6},"modelVersion":"gemini-2.0-flash-001","responseId":"abc"}`))
	want := []string{
		`{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":0,"model":"gemini-2.0-flash-001","choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"logprobs":null,"finish_reason":null}]}`,
		`{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":0,"model":"gemini-2.0-flash-001","choices":[{"index":0,"delta":{"content":" upon"},"logprobs":null,"finish_reason":null}]}`,
		`{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":0,"model":"gemini-2.0-flash-001","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}`,
		`{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":0,"model":"gemini-2.0-flash-001","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}`,
	}
	got := drain(t, s)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("chunks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := s.Next(); err != io.EOF {
		t.Errorf("Next after the end = %v", err)
	}
	if c.touches != 3 {
		t.Errorf("%d touches, want one per event", c.touches)
	}
	s.Close()
	if !c.drained {
		t.Error("a cleanly ended stream was not drained for reuse")
	}
}

// TestStreamFirstPieceIsCall checks the role chunk comes first when an
// answer starts with a call, and that a finish with no content at all
// still opens with one.
func TestStreamFirstPieceIsCall(t *testing.T) {
	s, _ := memStream(ev(`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{"a" : [1, 2]},"id":"gem-call-1"}}],"role":"model"},"finishReason":"STOP","index":0}],"responseId":"x"}`))
	got := drain(t, s)
	want := []string{
		`{"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,"model":"fallback-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`,
		`{"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,"model":"fallback-model","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"gem-call-1","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}]},"logprobs":null,"finish_reason":null}]}`,
		`{"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,"model":"fallback-model","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}`,
		`{"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,"model":"fallback-model","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("chunks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	s, _ = memStream(ev(`{"candidates":[{"content":{"role":"model"},"finishReason":"SAFETY","index":0}]}`))
	got = drain(t, s)
	if len(got) != 3 || !strings.Contains(got[0], `"role":"assistant"`) || !strings.Contains(got[1], `"finish_reason":"content_filter"`) {
		t.Fatalf("chunks:\n%s", strings.Join(got, "\n"))
	}
}

func TestStreamTwoCandidates(t *testing.T) {
	s, _ := memStream(
		ev(`{"candidates":[{"content":{"parts":[{"text":"A1"}],"role":"model"},"index":0},{"content":{"parts":[{"text":"B1"}],"role":"model"},"index":1}],"responseId":"two"}`) +
			ev(`{"candidates":[{"content":{"parts":[{"text":"B2"}],"role":"model"},"index":1,"finishReason":"STOP"}],"responseId":"two"}`) +
			ev(`{"candidates":[{"content":{"parts":[{"text":"A2"}],"role":"model"},"index":0,"finishReason":"STOP"}],"responseId":"two"}`))
	type delta struct {
		index        int
		role, text   string
		finishReason string
	}
	var got []delta
	for {
		c, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) == 0 {
			continue
		}
		ch := c.Choices[0]
		got = append(got, delta{ch.Index, ch.Role, strings.Clone(ch.Content), ch.FinishReason}) // chunk strings last until the next call
	}
	want := []delta{
		{0, "assistant", "A1", ""}, {1, "assistant", "B1", ""},
		{1, "", "B2", ""}, {1, "", "", "stop"},
		{0, "", "A2", ""}, {0, "", "", "stop"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestStreamBuffered(t *testing.T) {
	s, _ := memStream(ev(`{"candidates":[{"content":{"parts":[{"text":"a"},{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}]}`))
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	// The call and the finish are queued: a relay must not flush yet.
	if s.Buffered() == 0 {
		t.Fatal("Buffered = 0 with chunks queued")
	}
	s.Next()
	s.Next()
	if _, err := s.Next(); err != nil { // usage, after EOF was read
		t.Fatal(err)
	}
	if s.Buffered() != 0 {
		t.Errorf("Buffered = %d at the end", s.Buffered())
	}
}

func TestStreamWithoutResponseID(t *testing.T) {
	body := ev(`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f"}},{"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}]}`)
	ids := map[string]bool{}
	for range 2 {
		s, _ := memStream(body)
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.ID, "chatcmpl-") || len(c.ID) < 12 {
				t.Fatalf("chunk ID %q", c.ID)
			}
			for _, ch := range c.Choices {
				for _, tc := range ch.ToolCalls {
					if !strings.HasPrefix(tc.ID, "call_") || ids[tc.ID] {
						t.Fatalf("tool call ID %q is bad or repeated", tc.ID)
					}
					ids[tc.ID] = true
					if tc.Arguments != "{}" {
						t.Errorf("arguments %q", tc.Arguments)
					}
				}
			}
		}
	}
	if len(ids) != 4 {
		t.Fatalf("%d IDs", len(ids))
	}
}
