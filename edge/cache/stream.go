package cache

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// Recording is what a replay needs of a stream.
type Recording struct {
	// Chunks are OpenAI chunk JSON, or with Events set a native
	// stream's event data, Events naming each event.
	Chunks [][]byte
	Events []string
	// Ends[i] says chunk i ended a burst.
	Ends []bool
	// Usage is the stream's, when HasUsage.
	Usage    llm.Usage
	HasUsage bool
}

// Record wraps st so that its chunks are copied as they pass, and calls
// done once, at the stream's clean end (before Next returns io.EOF, so
// before the client is sent the end: a client that asks again the
// moment it read the end finds the entry), with what a replay needs
// (Recording). A stream that broke, was cut, mixed native
// events with canonical chunks, or grew past limit bytes is not handed
// over.
func Record(st llm.Stream, limit int64, done func(*Recording)) llm.Stream {
	return &recorder{Stream: st, limit: limit, keep: true, done: done}
}

type recorder struct {
	llm.Stream
	limit    int64
	size     int64
	keep     bool
	clean    bool
	chunks   [][]byte
	events   []string
	ends     []bool
	usage    llm.Usage
	hasUsage bool
	once     sync.Once
	done     func(*Recording)
}

func (r *recorder) Next() (*llm.Chunk, error) {
	c, err := r.Stream.Next()
	switch {
	case err != nil:
		r.clean = errors.Is(err, io.EOF)
		if r.clean {
			r.finish()
		}
	case r.keep:
		r.copy(c)
	}
	return c, err
}

func (r *recorder) copy(c *llm.Chunk) {
	if c.Event != "" {
		// A native event, kept as it came, named.
		if len(r.chunks) != len(r.events) {
			r.keep = false
			return
		}
		r.add(bytes.Clone(c.Raw))
		if r.keep {
			r.events = append(r.events, c.Event)
		}
		return
	}
	if len(r.events) > 0 || c.Parse() != nil {
		r.keep = false
		return
	}
	if c.Usage != nil {
		r.usage, r.hasUsage = *c.Usage, true
		if len(c.Choices) == 0 {
			return // the usage chunk: a replay renders its own, marked cached
		}
		r.keep = false // usage inside a content chunk would replay unmarked
		return
	}
	r.add(c.AppendJSON(nil))
}

func (r *recorder) add(b []byte) {
	r.size += int64(len(b))
	if r.size > r.limit {
		r.keep = false
		r.chunks, r.ends, r.events = nil, nil, nil
		return
	}
	r.chunks = append(r.chunks, b)
	r.ends = append(r.ends, r.buffered() == 0)
}

func (r *recorder) buffered() int {
	if b, ok := r.Stream.(llm.Buffered); ok {
		return b.Buffered()
	}
	return 0
}

// Buffered passes the inner stream's, so the relay groups writes as it
// would without the recorder.
func (r *recorder) Buffered() int { return r.buffered() }

func (r *recorder) Close() error {
	err := r.Stream.Close()
	r.finish()
	return err
}

// finish hands the recording over once, if the stream ended cleanly and
// was kept.
func (r *recorder) finish() {
	r.once.Do(func() {
		if !r.clean || !r.keep {
			return
		}
		u, ok := r.Stream.Usage()
		if !ok {
			u, ok = r.usage, r.hasUsage
		}
		r.done(&Recording{Chunks: r.chunks, Events: r.events, Ends: r.ends, Usage: u, HasUsage: ok})
	})
}

// Replay returns a stream that plays e's chunks as they were recorded,
// with the same bursts (Buffered reports more in memory until a chunk
// that ended one), then, when e has usage, a usage chunk with no
// choices that the surfaces render marked as cached.
func Replay(e *Entry) llm.Stream {
	return &replay{e: e}
}

type replay struct {
	e         *Entry
	i         int
	c         llm.Chunk
	usageSent bool
	id, model string
	created   int64
}

func (r *replay) Next() (*llm.Chunk, error) {
	if r.i < len(r.e.Chunks) {
		r.c.SetRaw(r.e.Chunks[r.i])
		if r.e.Events != nil {
			r.c.Event = r.e.Events[r.i]
			r.i++
			return &r.c, nil // a native stream's usage travels in its own events
		}
		r.i++
		if r.i == 1 && r.c.Parse() == nil {
			r.id, r.model, r.created = r.c.ID, r.c.Model, r.c.Created
		}
		return &r.c, nil
	}
	if !r.usageSent && r.e.Usage != (llm.Usage{}) && r.e.Events == nil {
		r.usageSent = true
		u := r.e.Usage
		r.c.Reset()
		r.c.ID, r.c.Model, r.c.Created, r.c.Usage = r.id, r.model, r.created, &u
		return &r.c, nil
	}
	return nil, io.EOF
}

// Buffered is 1 while the chunk just returned is inside a burst.
func (r *replay) Buffered() int {
	if r.i > 0 && r.i <= len(r.e.Chunks) && !r.e.Ends[r.i-1] {
		return 1
	}
	return 0
}

func (r *replay) Usage() (llm.Usage, bool) { return r.e.Usage, r.e.Usage != (llm.Usage{}) }

func (r *replay) Close() error { return nil }
