package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t testing.TB, in string) ([]Event, error) {
	t.Helper()
	r := NewReader(strings.NewReader(in))
	var out []Event
	for {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, Event{Name: ev.Name, Data: bytes.Clone(ev.Data)})
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // "name|data"
		wantErr error
	}{
		{"openai", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{`|{"a":1}`, "|[DONE]"}, io.EOF},
		{"crlf", "data: x\r\n\r\n", []string{"|x"}, io.EOF},
		{"comments and keepalive", ": ping\n\ndata: x\n\n: keep-alive\n\n", []string{"|x"}, io.EOF},
		{"named", "event: message_start\ndata: {}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n", []string{"message_start|{}", `ping|{"type":"ping"}`}, io.EOF},
		{"multiline", "data: a\ndata: b\n\n", []string{"|a\nb"}, io.EOF},
		{"no space", "data:x\n\n", []string{"|x"}, io.EOF},
		{"ignored fields", "id: 7\nretry: 10\ndata: x\n\n", []string{"|x"}, io.EOF},
		{"cut mid event", "data: x\n\ndata: {\"partial", []string{"|x"}, io.ErrUnexpectedEOF},
		{"cut before blank line", "data: x\n", nil, io.ErrUnexpectedEOF},
		{"empty", "", nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var gs []string
			for _, e := range got {
				gs = append(gs, e.Name+"|"+string(e.Data))
			}
			if strings.Join(gs, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("events = %q, want %q", gs, tt.want)
			}
		})
	}
}

func TestReaderLongLine(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	got, err := readAll(t, "data: "+long+"\n\n")
	if err != io.EOF || len(got) != 1 || string(got[0].Data) != long {
		t.Fatalf("long line: err=%v n=%d", err, len(got))
	}
}

func TestReaderTooLarge(t *testing.T) {
	big := strings.Repeat("x", MaxEventBytes+1)
	_, err := readAll(t, "data: "+big+"\n\n")
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

// FuzzReader checks that no input makes the reader panic, loop or return
// data it did not read, and that an event's data written back as a
// "data:" line reads back the same.
func FuzzReader(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: x\ndata: y\r\n\r\n: c\n\n"))
	f.Add([]byte("data: a\ndata: b\n\ndata"))
	f.Add([]byte(":\n\n\n\nid\ndata\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		total := 0
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				break
			}
			total += len(ev.Data)
			if total > len(in) {
				t.Fatalf("read %d data bytes from %d input bytes", total, len(in))
			}
			if i > len(in) {
				t.Fatal("more events than input bytes")
			}
			if !bytes.ContainsAny(ev.Data, "\r\n") {
				var b bytes.Buffer
				b.WriteString("data: ")
				b.Write(ev.Data)
				b.WriteString("\n\n")
				back, err := NewReader(&b).Next()
				if err != nil || !bytes.Equal(back.Data, ev.Data) {
					t.Fatalf("round trip of %q gave %q, %v", ev.Data, back.Data, err)
				}
			}
		}
	})
}
