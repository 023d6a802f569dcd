package bedrock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The AWS event-stream framing of ConverseStream (the SDK's
// aws/protocol/eventstream writes and reads the same; the mock encodes
// with it). A frame is
//
//	total length u32 | headers length u32 | CRC32 of those 8 bytes
//	headers | payload | CRC32 of everything before
//
// and a header is name length u8, name, type u8, value. This reader
// exists because the SDK's decoder allocates some forty times per
// frame, which alone costs more than the 1 µs per chunk translation
// budget; it reuses one buffer and allocates nothing.

const (
	preludeLen = 12
	// maxFrame bounds a frame; ConverseStream's are a few hundred bytes.
	maxFrame = 1 << 20
)

// errFrame marks a frame that breaks the format (lengths, checksums,
// header types): the stream cannot be read further.
var errFrame = errors.New("malformed event-stream frame")

// frame is one decoded frame; its slices point into the reader's buffer
// and are valid until the next read.
type frame struct {
	messageType, eventType, exceptionType, errorCode, errorMessage []byte
	payload                                                        []byte
}

// frameReader reads frames from r.
type frameReader struct {
	r   io.Reader
	buf []byte
}

// next reads one frame. io.EOF means the stream ended between frames.
func (fr *frameReader) next(f *frame) error {
	*f = frame{}
	if cap(fr.buf) < preludeLen {
		fr.buf = make([]byte, 0, 1024)
	}
	p := fr.buf[:preludeLen]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		return err // io.EOF between frames, io.ErrUnexpectedEOF inside one
	}
	total := binary.BigEndian.Uint32(p[0:4])
	hlen := binary.BigEndian.Uint32(p[4:8])
	if crc32.ChecksumIEEE(p[:8]) != binary.BigEndian.Uint32(p[8:12]) {
		return fmt.Errorf("%w: prelude checksum", errFrame)
	}
	if total < preludeLen+4 || total > maxFrame || hlen > total-preludeLen-4 {
		return fmt.Errorf("%w: lengths %d/%d", errFrame, total, hlen)
	}
	if cap(fr.buf) < int(total) {
		b := make([]byte, total)
		copy(b, p)
		fr.buf = b[:0]
	}
	b := fr.buf[:total]
	if _, err := io.ReadFull(fr.r, b[preludeLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if crc32.ChecksumIEEE(b[:total-4]) != binary.BigEndian.Uint32(b[total-4:]) {
		return fmt.Errorf("%w: message checksum", errFrame)
	}
	f.payload = b[preludeLen+hlen : total-4]
	return f.headers(b[preludeLen : preludeLen+hlen])
}

// valueLen is the size of a fixed-size header value by type; -1 for
// types with a length prefix, -2 for unknown types.
var valueLen = [...]int{0, 0, 1, 2, 4, 8, -1, -1, 8, 16}

func (f *frame) headers(h []byte) error {
	for len(h) > 0 {
		n := int(h[0])
		if len(h) < 1+n+1 {
			return fmt.Errorf("%w: header name", errFrame)
		}
		name := h[1 : 1+n]
		typ := int(h[1+n])
		h = h[2+n:]
		if typ >= len(valueLen) {
			return fmt.Errorf("%w: header type %d", errFrame, typ)
		}
		size := valueLen[typ]
		start := 0
		if size == -1 {
			if len(h) < 2 {
				return fmt.Errorf("%w: header value", errFrame)
			}
			size, start = int(binary.BigEndian.Uint16(h)), 2
		}
		if len(h) < start+size {
			return fmt.Errorf("%w: header value", errFrame)
		}
		v := h[start : start+size]
		h = h[start+size:]
		if typ != 7 { // only string headers matter here
			continue
		}
		switch string(name) {
		case ":message-type":
			f.messageType = v
		case ":event-type":
			f.eventType = v
		case ":exception-type":
			f.exceptionType = v
		case ":error-code":
			f.errorCode = v
		case ":error-message":
			f.errorMessage = v
		}
	}
	return nil
}
