package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// StreamRun sends a fixed number of streaming requests (server-sent
// events in OpenAI's chat format) at a fixed concurrency and times the
// first content event and the end of each stream.
type StreamRun struct {
	// Requests is the number of streams to run.
	Requests int
	// Concurrency is the number of streams open at once.
	Concurrency int
	// MaxDuration bounds the whole run; streams not started by then are
	// not sent. Default: 60s.
	MaxDuration time.Duration
	// Timeout bounds one stream, start to end. Default: DefaultTimeout.
	Timeout time.Duration
}

func (o *StreamRun) fill() error {
	if o.Requests < 1 || o.Concurrency < 1 {
		return errors.New("loadgen: stream run needs at least 1 request and a concurrency of at least 1")
	}
	if o.MaxDuration <= 0 {
		o.MaxDuration = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return nil
}

// Stream runs streams against t, whose body must ask for a stream. A
// stream counts as OK when it answers 2xx, carries at least one content
// event and ends with "data: [DONE]". Latencies hold the time to the end
// of each stream and TTFT the time to its first content event, both from
// the actual send. When ctx ends it stops and returns what it measured
// with ctx's error.
func (c *Client) Stream(ctx context.Context, t Target, o StreamRun) (Result, error) {
	if err := o.fill(); err != nil {
		return Result{}, err
	}
	lat := make([]time.Duration, o.Requests)
	ttft := make([]time.Duration, o.Requests)
	readers := sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}
	r := c.workers(ctx, o.Concurrency, o.MaxDuration, o.Timeout, lat, func(ctx context.Context, slot int) error {
		br := readers.Get().(*bufio.Reader)
		defer readers.Put(br)
		first, total, err := c.stream(ctx, &t, br)
		lat[slot], ttft[slot] = total, first
		if err != nil {
			ttft[slot] = failed
		}
		return err
	})
	r.TTFT = collect(ttft[:min(r.Sent, len(ttft))])
	return r, ctx.Err()
}

var (
	dataPrefix = []byte("data:")
	doneEvent  = []byte("[DONE]")
	contentKey = []byte(`"content":`)
)

// errNoDone is a stream that ended without its final [DONE] event.
var errNoDone = errors.New("stream ended without data: [DONE]")

// stream sends one streaming request and reads it to the end with br,
// returning the time to the first content event and to the end.
func (c *Client) stream(ctx context.Context, t *Target, br *bufio.Reader) (first, total time.Duration, err error) {
	began := time.Now()
	resp, err := c.post(ctx, t)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	br.Reset(resp.Body)
	defer br.Reset(nil) // drop the body before the reader is pooled
	done := false
	midLine := false // the last read ended inside a line longer than br's buffer
	for {
		line, rerr := br.ReadSlice('\n')
		if !midLine {
			if data, ok := bytes.CutPrefix(line, dataPrefix); ok {
				data = bytes.TrimSpace(data)
				switch {
				case bytes.Equal(data, doneEvent):
					done = true
				case first == 0 && hasContent(data):
					first = time.Since(began)
				}
			}
		}
		midLine = errors.Is(rerr, bufio.ErrBufferFull)
		if rerr == nil || midLine {
			continue
		}
		total = time.Since(began)
		if rerr != io.EOF {
			return first, total, fmt.Errorf("reading stream: %w", rerr)
		}
		break
	}
	switch {
	case !done:
		return first, total, errNoDone
	case first == 0:
		return first, total, errors.New("stream carried no content")
	}
	return first, total, nil
}

// hasContent reports whether an event's JSON carries a non-empty
// "content" string, as a chat.completion.chunk delta with text does (the
// first chunk usually carries only the role and "content":"").
func hasContent(data []byte) bool {
	for {
		i := bytes.Index(data, contentKey)
		if i < 0 {
			return false
		}
		data = bytes.TrimLeft(data[i+len(contentKey):], " \t")
		if len(data) >= 2 && data[0] == '"' && data[1] != '"' {
			return true
		}
	}
}
