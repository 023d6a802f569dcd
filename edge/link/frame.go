package link

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	linkv1 "github.com/meridian-mesh/meridian/proto/link/v1"
	"google.golang.org/protobuf/proto"
)

// Frame decoding errors.
var (
	// ErrFrameTooLarge is returned for a length prefix above the cap; the
	// frame's bytes are never read.
	ErrFrameTooLarge = errors.New("link: frame exceeds the size cap")
	// ErrBadFrame is returned for a frame that is not a valid message, or
	// not the message the protocol expects at that point.
	ErrBadFrame = errors.New("link: malformed frame")
)

// maxVarintLen is the longest uvarint a frame length may take; anything
// longer is garbage, not a length.
const maxVarintLen = 5

// frameReader reads length-prefixed frames, reusing one buffer.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	n   int64 // bytes read, for metrics
}

// Buffers are pooled: a forwarded request would otherwise allocate
// 64 KiB of them across both ends.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// maxKeptBuf bounds the frame buffer a frameReader keeps between frames.
const maxKeptBuf = 64 << 10

func newFrameReader(r io.Reader, max int) *frameReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &frameReader{r: br, max: max}
}

// release returns the reader's buffer to the pool; the reader must not be
// used again.
func (fr *frameReader) release() {
	if fr.r == nil {
		return
	}
	fr.r.Reset(nil)
	readerPool.Put(fr.r)
	fr.r, fr.buf = nil, nil
}

// read decodes the next frame into f. It returns io.EOF only at a frame
// boundary; a frame cut short gives io.ErrUnexpectedEOF.
func (fr *frameReader) read(f *linkv1.Frame) error {
	size, err := readUvarint(fr.r)
	if err != nil {
		return err
	}
	if size > uint64(fr.max) {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrFrameTooLarge, size, fr.max)
	}
	if cap(fr.buf) < int(size) {
		fr.buf = make([]byte, size)
	}
	defer func() {
		if cap(fr.buf) > maxKeptBuf {
			fr.buf = nil // a rare large frame is not kept for the stream's life
		}
	}()
	b := fr.buf[:size]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	fr.n += int64(size) + int64(uvarintLen(size))
	f.Reset()
	if err := proto.Unmarshal(b, f); err != nil {
		return fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if f.Kind == nil {
		return fmt.Errorf("%w: empty frame", ErrBadFrame)
	}
	return nil
}

// buffered reports whether a whole or partial next frame is in memory.
func (fr *frameReader) buffered() int {
	if fr.r == nil {
		return 0
	}
	return fr.r.Buffered()
}

func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < maxVarintLen; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: length prefix too long", ErrBadFrame)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// frameWriter writes length-prefixed frames into a buffered writer; the
// caller decides when to flush.
type frameWriter struct {
	w   *bufio.Writer
	max int
	buf []byte
	n   int64 // bytes written, for metrics
}

func newFrameWriter(w io.Writer, max int) *frameWriter {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return &frameWriter{w: bw, max: max}
}

// release returns the writer's buffer to the pool, dropping anything not
// flushed; the writer must not be used again.
func (fw *frameWriter) release() {
	if fw.w == nil {
		return
	}
	fw.w.Reset(nil)
	writerPool.Put(fw.w)
	fw.w = nil
}

func (fw *frameWriter) write(f *linkv1.Frame) error {
	var err error
	fw.buf, err = proto.MarshalOptions{}.MarshalAppend(fw.buf[:0], f)
	if err != nil {
		return err
	}
	if len(fw.buf) > fw.max {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrFrameTooLarge, len(fw.buf), fw.max)
	}
	var pre [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(pre[:], uint64(len(fw.buf)))
	if _, err := fw.w.Write(pre[:n]); err != nil {
		return err
	}
	if _, err := fw.w.Write(fw.buf); err != nil {
		return err
	}
	fw.n += int64(n + len(fw.buf))
	return nil
}

func (fw *frameWriter) flush() error { return fw.w.Flush() }

// encodeHeader turns a canonical request into a Header frame. A request
// that came in on a translating surface has Chat and maybe no Body; it
// travels as OpenAI JSON encoded from Chat, with top_k beside it because
// OpenAI's format has no such field.
func encodeHeader(id []byte, req *llm.Request, model string, hops int, now time.Time, deadline time.Time) (*linkv1.Header, error) {
	body := req.Body
	var topK *int64
	if req.Chat != nil {
		if body == nil {
			// Body-less requests carry their stream flags beside Chat;
			// put them in the JSON, where the serving edge's adapters
			// read them from a body.
			c := *req.Chat
			c.Stream = req.Stream
			if req.Stream && req.IncludeUsage && c.StreamOptions == nil {
				c.StreamOptions = &llm.StreamOptions{IncludeUsage: true}
			}
			b, err := json.Marshal(&c)
			if err != nil {
				return nil, &llm.Error{Status: http.StatusInternalServerError, Type: llm.TypeServer, Message: "internal error", Cause: err}
			}
			body = b
		}
		if req.Chat.TopK != nil {
			k := int64(*req.Chat.TopK)
			topK = &k
		}
	}
	h := &linkv1.Header{
		Id:           id,
		RequestId:    req.ID,
		Op:           linkv1.Op(req.Op),
		Model:        model,
		Stream:       req.Stream,
		IncludeUsage: req.IncludeUsage,
		Body:         body,
		TopK:         topK,
		SentUnixMs:   now.UnixMilli(),
		Hops:         uint32(hops),

		AllowedRegions: req.AllowedRegions,
	}
	if !deadline.IsZero() {
		h.DeadlineUnixMs = deadline.UnixMilli()
	}
	return h, nil
}

// decodeHeader rebuilds the canonical request a Header carries.
func decodeHeader(h *linkv1.Header) (*llm.Request, error) {
	op := llm.Op(h.Op)
	if op < llm.OpChat || op > llm.OpEmbedding {
		return nil, fmt.Errorf("%w: unknown op %d", ErrBadFrame, h.Op)
	}
	if h.Model == "" || len(h.Body) == 0 {
		return nil, fmt.Errorf("%w: header without model or body", ErrBadFrame)
	}
	req := &llm.Request{ID: h.RequestId, Op: op, Model: h.Model, Stream: h.Stream, IncludeUsage: h.IncludeUsage, Body: h.Body,
		AllowedRegions: h.AllowedRegions}
	if len(h.AllowedRegions) > 64 {
		return nil, fmt.Errorf("%w: more than 64 allowed regions", ErrBadFrame)
	}
	if h.TopK != nil {
		c, err := req.ChatRequest()
		if err != nil {
			return nil, err
		}
		k := int(*h.TopK)
		c.TopK = &k
	}
	return req, nil
}

func encodeError(e *llm.Error) *linkv1.Error {
	return &linkv1.Error{
		Status: int32(e.Status), Type: e.Type, Code: e.Code, Param: e.Param, Message: e.Message,
		RetryAfterMs: e.RetryAfter.Milliseconds(), Retryable: e.Retryable,
	}
}

// decodeError rebuilds an error the serving edge reported. Its message
// was already safe to show a client there, so it is kept as it is.
func decodeError(e *linkv1.Error, peer string) *llm.Error {
	status := int(e.Status)
	if status < 400 || status > 599 {
		status = http.StatusBadGateway
	}
	typ := e.Type
	if typ == "" {
		typ = llm.TypeUpstream
	}
	return &llm.Error{
		Status: status, Type: typ, Code: e.Code, Param: e.Param, Message: e.Message,
		RetryAfter: time.Duration(e.RetryAfterMs) * time.Millisecond, Retryable: e.Retryable,
		Cause: fmt.Errorf("reported by peer %s", peer),
	}
}

func encodeUsage(u llm.Usage) *linkv1.Usage {
	return &linkv1.Usage{PromptTokens: int64(u.PromptTokens), CompletionTokens: int64(u.CompletionTokens), TotalTokens: int64(u.TotalTokens)}
}

func decodeUsage(u *linkv1.Usage) llm.Usage {
	return llm.Usage{PromptTokens: int(u.PromptTokens), CompletionTokens: int(u.CompletionTokens), TotalTokens: int(u.TotalTokens)}
}
