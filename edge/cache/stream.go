package cache

import (
	"errors"
	"io"
	"sync"

	"github.com/meridian-mesh/meridian/edge/llm"
)

// Record wraps st so that its chunks are copied as they pass, and calls
// done once, when the stream is closed after a clean end, with what a
// replay needs: the chunks as OpenAI chunk JSON, where each burst ended,
// and the usage. A stream that broke, was cut, carried a passed-through
// event (Anthropic's own format, which the other surface cannot
// render), or grew past limit bytes is not handed over.
func Record(st llm.Stream, limit int64, done func(chunks [][]byte, ends []bool, u llm.Usage, hasUsage bool)) llm.Stream {
	return &recorder{Stream: st, limit: limit, keep: true, done: done}
}

type recorder struct {
	llm.Stream
	limit    int64
	size     int64
	keep     bool
	clean    bool
	chunks   [][]byte
	ends     []bool
	usage    llm.Usage
	hasUsage bool
	once     sync.Once
	done     func([][]byte, []bool, llm.Usage, bool)
}

func (r *recorder) Next() (*llm.Chunk, error) {
	c, err := r.Stream.Next()
	switch {
	case err != nil:
		r.clean = errors.Is(err, io.EOF)
	case r.keep:
		r.copy(c)
	}
	return c, err
}

func (r *recorder) copy(c *llm.Chunk) {
	if c.Event != "" || c.Parse() != nil {
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
	b := c.AppendJSON(nil)
	r.size += int64(len(b))
	if r.size > r.limit {
		r.keep = false
		r.chunks, r.ends = nil, nil
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
	r.once.Do(func() {
		if !r.clean || !r.keep {
			return
		}
		u, ok := r.Stream.Usage()
		if !ok {
			u, ok = r.usage, r.hasUsage
		}
		r.done(r.chunks, r.ends, u, ok)
	})
	return err
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
		r.i++
		if r.i == 1 && r.c.Parse() == nil {
			r.id, r.model, r.created = r.c.ID, r.c.Model, r.c.Created
		}
		return &r.c, nil
	}
	if !r.usageSent && r.e.Usage != (llm.Usage{}) {
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
