package link

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// panicStream yields one chunk and then panics, as a buggy adapter would.
type panicStream struct{ fakeStream }

func (s *panicStream) Next() (*llm.Chunk, error) {
	if s.i >= 1 {
		panic("adapter bug")
	}
	return s.fakeStream.Next()
}

// TestPanicInHandlerAnswersPeer checks that a panic while serving a
// forwarded request, before or during its stream, becomes a 500-class
// error for the forwarding side, is counted, and leaves the transport
// serving the next request.
func TestPanicInHandlerAnswersPeer(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		switch body := string(req.Body); {
		case strings.Contains(body, "panic-now"):
			var s []int
			_ = s[len(req.Body)] // an index out of range: a real runtime panic
		case strings.Contains(body, "panic-mid-stream"):
			return &llm.Response{Stream: &panicStream{fakeStream{ctx: ctx, n: 5}}}, nil
		}
		return rec.handle(ctx, req)
	})
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	ctx := context.Background()

	for _, stream := range []bool{false, true} {
		_, err := p.Do(ctx, chatReq(stream, "panic-now"), "gpt")
		var e *llm.Error
		if !errors.As(err, &e) || e.Status != http.StatusInternalServerError || e.Retryable || e.Type != llm.TypeServer {
			t.Fatalf("stream=%v: a panicking handler answered %#v (%v), want a non-retryable 500", stream, e, err)
		}
	}

	resp, err := p.Do(ctx, chatReq(true, "panic-mid-stream"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, resp.Stream)
	resp.Stream.Close()
	var e *llm.Error
	if len(chunks) != 1 || !errors.As(err, &e) || e.Status != http.StatusInternalServerError || e.Retryable {
		t.Fatalf("a stream that panicked after %d chunks ended with %v, want a non-retryable 500", len(chunks), err)
	}

	// The transport survived: the next requests are served.
	if _, err := p.Do(ctx, chatReq(false, "hi"), "gpt"); err != nil {
		t.Fatalf("after the panics: %v", err)
	}
	resp, err = p.Do(ctx, chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	if chunks, err := drain(t, resp.Stream); !errors.Is(err, io.EOF) || len(chunks) != 5 {
		t.Fatalf("after the panics: %d chunks, %v", len(chunks), err)
	}
	resp.Stream.Close()
	wait.For(t, 5e9, "panics counted", func() bool {
		return counterValue(b.met.streams.WithLabelValues("in", "panic")) == 3
	})
}
