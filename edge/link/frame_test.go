package link

import (
	"bytes"
	"errors"
	"io"
	"testing"

	linkv1 "github.com/meridian-mesh/meridian/proto/link/v1"
	"google.golang.org/protobuf/proto"
)

func frameOf(h *linkv1.Header) *linkv1.Frame {
	return &linkv1.Frame{Kind: &linkv1.Frame_Header{Header: h}}
}

func encodeFrames(t testing.TB, frames ...*linkv1.Frame) []byte {
	var b bytes.Buffer
	fw := newFrameWriter(&b, 1<<20)
	for _, f := range frames {
		if err := fw.write(f); err != nil {
			t.Fatal(err)
		}
	}
	fw.flush()
	return b.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	in := []*linkv1.Frame{
		frameOf(&linkv1.Header{Id: []byte("0123456789abcdef"), Model: "m", Body: []byte(`{}`), Hops: 1}),
		{Kind: &linkv1.Frame_Chunk{Chunk: &linkv1.Chunk{Json: []byte(`{"a":1}`), Typed: true}}},
		{Kind: &linkv1.Frame_Trailer{Trailer: &linkv1.Trailer{Usage: &linkv1.Usage{TotalTokens: 9}}}},
	}
	fr := newFrameReader(bytes.NewReader(encodeFrames(t, in...)), 1<<20)
	for i, want := range in {
		var got linkv1.Frame
		if err := fr.read(&got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(&got, want) {
			t.Errorf("frame %d: got %v want %v", i, &got, want)
		}
	}
	var f linkv1.Frame
	if err := fr.read(&f); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v", err)
	}
}

func TestFrameDecoderRejects(t *testing.T) {
	good := encodeFrames(t, frameOf(&linkv1.Header{Model: "m"}))
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"oversize":      {[]byte{0xff, 0xff, 0xff, 0x7f}, ErrFrameTooLarge},
		"long varint":   {[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, ErrBadFrame},
		"cut length":    {[]byte{0x80}, io.ErrUnexpectedEOF},
		"cut body":      {good[:len(good)-1], io.ErrUnexpectedEOF},
		"garbage":       {[]byte{3, 0xff, 0xff, 0xff}, ErrBadFrame},
		"empty message": {[]byte{0}, ErrBadFrame},
	}
	for name, tc := range cases {
		fr := newFrameReader(bytes.NewReader(tc.in), 1024)
		var f linkv1.Frame
		if err := fr.read(&f); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", name, err, tc.want)
		}
	}
}

// FuzzFrameDecoder feeds arbitrary bytes to the frame decoder and to the
// header decoder behind it: neither may panic, allocate past the cap or
// accept a frame that does not re-encode.
func FuzzFrameDecoder(f *testing.F) {
	f.Add(encodeFrames(f, frameOf(&linkv1.Header{Id: []byte("0123456789abcdef"), Op: linkv1.Op_OP_CHAT, Model: "m", Body: []byte(`{"model":"m","messages":[]}`)})))
	f.Add(encodeFrames(f, &linkv1.Frame{Kind: &linkv1.Frame_Chunk{Chunk: &linkv1.Chunk{Json: []byte(`{}`)}}}))
	topK := int64(3)
	f.Add(encodeFrames(f, frameOf(&linkv1.Header{Op: linkv1.Op_OP_CHAT, Model: "m", TopK: &topK, Body: []byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`)})))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := newFrameReader(bytes.NewReader(in), 4096)
		for i := 0; i < 64; i++ {
			var fm linkv1.Frame
			if err := fr.read(&fm); err != nil {
				return
			}
			if cap(fr.buf) > 4096 {
				t.Fatalf("buffer grew to %d past the cap", cap(fr.buf))
			}
			if _, err := proto.Marshal(&fm); err != nil {
				t.Fatalf("accepted frame does not re-encode: %v", err)
			}
			if h := fm.GetHeader(); h != nil {
				decodeHeader(h)
			}
		}
	})
}
