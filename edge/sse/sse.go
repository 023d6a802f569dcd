// Package sse reads server-sent event streams, as LLM APIs use them:
// "data:" lines separated by blank lines, ":" comment lines, and an
// optional "event:" name. (Writing is api.StreamWriter's: it batches
// events, which a per-event writer here could not.)
//
// The reader never buffers more than MaxEventBytes for one event, so a
// hostile or broken upstream cannot make it grow without bound.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxEventBytes bounds the data of one event.
const MaxEventBytes = 8 << 20

// ErrTooLarge reports an event larger than MaxEventBytes.
var ErrTooLarge = errors.New("sse: event exceeds size limit")

// Event is one dispatched event.
type Event struct {
	// Name is the "event:" field; empty for the default "message".
	Name string
	// Data is the event's data, lines joined with "\n". It is valid until
	// the next call to Reader.Next.
	Data []byte
}

// Reader decodes events from a stream.
type Reader struct {
	br   *bufio.Reader
	data []byte
	name []byte
	line []byte

	lastName string
}

// NewReader returns a Reader that reads from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 16<<10)}
}

// Buffered reports how many bytes are read from the stream but not yet
// returned. When it is zero the next call to Next may block, so a relay
// should flush what it has written before calling it.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Next returns the next event. At a clean end of stream it returns io.EOF;
// a stream that ends inside an event returns io.ErrUnexpectedEOF.
func (r *Reader) Next() (Event, error) {
	r.data = r.data[:0]
	r.name = r.name[:0]
	hasData := false
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if hasData || len(r.name) > 0 || len(line) > 0 {
					return Event{}, io.ErrUnexpectedEOF
				}
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if !hasData {
				// A blank line with no data dispatches nothing.
				r.name = r.name[:0]
				continue
			}
			if string(r.name) != r.lastName {
				r.lastName = string(r.name) // events mostly repeat a few names: allocate once per change
			}
			return Event{Name: r.lastName, Data: r.data}, nil
		}
		if line[0] == ':' {
			continue // comment, used for keep-alives
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > MaxEventBytes {
				return Event{}, ErrTooLarge
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.name = append(r.name[:0], value...)
		}
		// "id", "retry" and unknown fields are ignored, as the spec says.
	}
}

// readLine returns one line without its terminator (LF, CRLF or a lone CR
// followed by LF are handled; bare CR line endings are not used by any LLM
// API and are treated as data). The returned slice is valid until the next
// call.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.line)+len(chunk) > MaxEventBytes+64 {
			return nil, ErrTooLarge
		}
		if err == bufio.ErrBufferFull {
			r.line = append(r.line, chunk...)
			continue
		}
		if err != nil {
			if err == io.EOF && len(chunk)+len(r.line) > 0 {
				// A final line with no terminator is incomplete.
				return append(r.line, chunk...), io.EOF
			}
			return nil, err
		}
		var line []byte
		if len(r.line) > 0 {
			r.line = append(r.line, chunk...)
			line = r.line
		} else {
			line = chunk
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line, nil
	}
}
