package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrBadGGUF wraps every reason a GGUF file is refused before Ollama
// sees it.
var ErrBadGGUF = errors.New("not a usable GGUF model file")

// CheckGGUF reads the GGUF file at path and checks what Ollama's create
// path would otherwise trip over, some of it fatally (a wrong tensor
// count crashes `ollama serve` itself): the magic and version, every
// metadata value, every tensor description, an architecture name, and
// that every tensor's data lies inside the file.
//
// The reader is the project's own, a few dozen lines over the GGUF spec,
// rather than a GGUF library: those bring HTTP clients and reflection
// helpers the edge binary has no other use for.
func CheckGGUF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadGGUF, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadGGUF, err)
	}
	if err := checkGGUF(bufio.NewReaderSize(f, 64<<10), uint64(st.Size())); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadGGUF, path, err)
	}
	return nil
}

// GGUF value types.
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggmlTypes gives, per ggml tensor type, the elements in a block and the
// bytes a block takes. Types not listed are accepted unsized: their data
// range is not checked.
var ggmlTypes = map[uint32][2]uint64{
	0: {1, 4}, 1: {1, 2}, 2: {32, 18}, 3: {32, 20}, 6: {32, 22}, 7: {32, 24},
	8: {32, 34}, 9: {32, 36}, 10: {256, 84}, 11: {256, 110}, 12: {256, 144},
	13: {256, 176}, 14: {256, 210}, 15: {256, 292}, 24: {1, 1}, 25: {1, 2},
	26: {1, 4}, 27: {1, 8}, 28: {1, 8}, 30: {1, 2},
}

type ggufReader struct {
	r    *bufio.Reader
	size uint64 // the file's size, bounding every count and length
	pos  uint64
	err  error
}

func (g *ggufReader) bytes(n uint64) []byte {
	if g.err != nil {
		return nil
	}
	if n > g.size-min(g.pos, g.size) {
		g.err = fmt.Errorf("at byte %d: %d bytes needed, the file ends first", g.pos, n)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		g.err = fmt.Errorf("at byte %d: %v", g.pos, err)
		return nil
	}
	g.pos += n
	return b
}

func (g *ggufReader) skip(n uint64) {
	if g.err != nil {
		return
	}
	if n > g.size-min(g.pos, g.size) {
		g.err = fmt.Errorf("at byte %d: %d bytes needed, the file ends first", g.pos, n)
		return
	}
	if _, err := g.r.Discard(int(n)); err != nil {
		g.err = err
		return
	}
	g.pos += n
}

func (g *ggufReader) u32() uint32 {
	if b := g.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (g *ggufReader) u64() uint64 {
	if b := g.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (g *ggufReader) str() string {
	n := g.u64()
	if g.err == nil && n > 1<<20 {
		g.err = fmt.Errorf("at byte %d: a string of %d bytes", g.pos, n)
	}
	return string(g.bytes(n))
}

// value reads one metadata value of type typ, returning it when it is a
// string or an unsigned integer, the only kinds the check looks at.
func (g *ggufReader) value(typ uint32, depth int) (s string, u uint64) {
	switch typ {
	case ggufUint8, ggufInt8, ggufBool:
		if b := g.bytes(1); b != nil {
			u = uint64(b[0])
		}
	case ggufUint16, ggufInt16:
		g.skip(2)
	case ggufUint32, ggufInt32, ggufFloat32:
		u = uint64(g.u32())
	case ggufUint64, ggufInt64, ggufFloat64:
		u = g.u64()
	case ggufString:
		s = g.str()
	case ggufArray:
		if depth > 2 {
			g.err = fmt.Errorf("at byte %d: arrays nested too deep", g.pos)
			return
		}
		elem, n := g.u32(), g.u64()
		if g.err == nil && n > g.size {
			g.err = fmt.Errorf("at byte %d: an array of %d values", g.pos, n)
		}
		for i := uint64(0); i < n && g.err == nil; i++ {
			g.value(elem, depth+1)
		}
	default:
		if g.err == nil {
			g.err = fmt.Errorf("at byte %d: unknown value type %d", g.pos, typ)
		}
	}
	return
}

func checkGGUF(r *bufio.Reader, size uint64) error {
	g := &ggufReader{r: r, size: size}
	if magic := g.bytes(4); g.err == nil && string(magic) != "GGUF" {
		return errors.New("no GGUF magic at the start")
	}
	if v := g.u32(); g.err == nil && v != 2 && v != 3 {
		return fmt.Errorf("GGUF version %d (want 2 or 3)", v)
	}
	tensors, kvs := g.u64(), g.u64()
	// A tensor description takes at least 28 bytes and a key-value pair
	// at least 13, so larger counts cannot fit in the file.
	if g.err == nil && (tensors == 0 || tensors > size/28 || kvs > size/13) {
		return fmt.Errorf("header claims %d tensors and %d metadata values, impossible in %d bytes", tensors, kvs, size)
	}
	arch, align := "", uint64(32)
	for i := uint64(0); i < kvs && g.err == nil; i++ {
		key := g.str()
		s, u := g.value(g.u32(), 0)
		switch key {
		case "general.architecture":
			arch = s
		case "general.alignment":
			align = u
		}
	}
	if g.err != nil {
		return fmt.Errorf("metadata: %v", g.err)
	}
	if arch == "" {
		return errors.New("names no architecture (general.architecture)")
	}
	if align == 0 || align&(align-1) != 0 || align > 1<<20 {
		return fmt.Errorf("general.alignment %d is not a power of two", align)
	}
	type extent struct{ offset, bytes uint64 }
	exts := make([]extent, 0, min(tensors, 4096))
	for i := uint64(0); i < tensors && g.err == nil; i++ {
		name := g.str()
		dims := g.u32()
		if g.err == nil && (dims == 0 || dims > 4) {
			return fmt.Errorf("tensor %q has %d dimensions", name, dims)
		}
		elems := uint64(1)
		for d := uint32(0); d < dims && g.err == nil; d++ {
			n := g.u64()
			if g.err == nil && (n == 0 || n > size*256 || elems > (size*256)/n) {
				return fmt.Errorf("tensor %q has dimension %d of size %d", name, d, n)
			}
			elems *= n
		}
		typ, off := g.u32(), g.u64()
		if g.err != nil {
			break
		}
		if off%align != 0 {
			return fmt.Errorf("tensor %q at offset %d is not aligned to %d", name, off, align)
		}
		if t, ok := ggmlTypes[typ]; ok {
			if elems%t[0] != 0 {
				return fmt.Errorf("tensor %q: %d elements do not fill blocks of %d for its type %d", name, elems, t[0], typ)
			}
			exts = append(exts, extent{off, elems / t[0] * t[1]})
		}
	}
	if g.err != nil {
		return fmt.Errorf("tensor descriptions (header claims %d tensors): %v", tensors, g.err)
	}
	start := (g.pos + align - 1) / align * align
	for _, e := range exts {
		end := start + e.offset + e.bytes
		if end < start || end > size {
			return fmt.Errorf("tensor data ends at byte %d, past the end of the file (%d bytes): truncated?", end, size)
		}
	}
	return nil
}
