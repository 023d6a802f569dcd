package tinygguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// GGUF value and tensor type codes (GGUF version 3).
const (
	ggufMagic   = 0x46554747 // "GGUF", little-endian
	ggufVersion = 3
	alignment   = 32

	kvUint32  = 4
	kvInt32   = 5
	kvFloat32 = 6
	kvBool    = 7
	kvString  = 8
	kvArray   = 9

	tensorF32 = 0
	tensorF16 = 1

	fileTypeMostlyF16 = 1
)

// Token ids past the 256 byte tokens.
var merges = []string{"Ġ t", "h e", "i n", "e r", "a n", "Ġ a", "o n", "r e"}

// Control tokens, in id order after the merges.
const (
	tokEndOfText = "<|endoftext|>"
	tokIMStart   = "<|im_start|>"
	tokIMEnd     = "<|im_end|>"
)

// ChatTemplate is the ChatML template written to tokenizer.chat_template;
// Ollama maps it to its own chatml template.
const ChatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Pre is the tokenizer.ggml.pre value: GPT-2's pre-tokenizer, known to both
// llama.cpp and Ollama's own tokenizer.
const Pre = "gpt-2"

// vocab is the tokenizer: byte tokens (id = byte value), merge results,
// then control tokens.
type vocab struct {
	tokens []string
	types  []int32
	last   []byte // the byte whose code a token embeds with
	bos    int
	eos    int
}

func buildVocab() vocab {
	b2u := byteToUnicode()
	u2b := make(map[rune]byte, 256)
	var v vocab
	for b := range 256 {
		u2b[b2u[b]] = byte(b)
		v.tokens = append(v.tokens, string(b2u[b]))
		v.types = append(v.types, 1)
		v.last = append(v.last, byte(b))
	}
	for _, m := range merges {
		var a, b string
		fmt.Sscanf(m, "%s %s", &a, &b)
		r := []rune(b)
		v.tokens = append(v.tokens, a+b)
		v.types = append(v.types, 1)
		v.last = append(v.last, u2b[r[len(r)-1]])
	}
	for _, c := range []string{tokEndOfText, tokIMStart, tokIMEnd} {
		v.tokens = append(v.tokens, c)
		v.types = append(v.types, 3)
		v.last = append(v.last, '\n')
	}
	v.bos = 256 + len(merges)     // <|endoftext|>
	v.eos = 256 + len(merges) + 2 // <|im_end|>
	return v
}

// byteToUnicode is GPT-2's reversible map from bytes to printable runes:
// printable Latin-1 bytes map to themselves, the rest to 256, 257, ….
func byteToUnicode() [256]rune {
	var m [256]rune
	n := 0
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

// rng is splitmix64: tiny, and fixed forever, unlike library generators
// whose helper methods may change between Go releases.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// perm is a Fisher-Yates permutation of 0..n-1.
func (r *rng) perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(r.next() % uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// uniform is in [-a, a), with 2^-24 resolution.
func (r *rng) uniform(a float32) float32 {
	return (float32(r.next()>>40)/(1<<24)*2 - 1) * a
}

// tensor is one tensor: ne[0] is the innermost (row) length.
type tensor struct {
	name string
	ne   []uint64
	typ  uint32
	data []float32
}

func (t tensor) size() uint64 {
	n := uint64(1)
	for _, d := range t.ne {
		n *= d
	}
	if t.typ == tensorF16 {
		return 2 * n
	}
	return 4 * n
}

// codes returns one ±1 code of length e per byte: rows of the Sylvester
// Hadamard matrix, with rows and columns permuted and rows sign-flipped,
// so they look random yet stay exactly orthogonal.
func codes(r *rng, e int) [][]float32 {
	rows := r.perm(e)
	cols := r.perm(e)
	out := make([][]float32, 256)
	for b := range out {
		sign := float32(1)
		if r.next()&1 == 1 {
			sign = -1
		}
		c := make([]float32, e)
		for j := range c {
			if bits.OnesCount(uint(rows[b]&cols[j]))%2 == 1 {
				c[j] = -sign
			} else {
				c[j] = sign
			}
		}
		out[b] = c
	}
	return out
}

func buildTensors(opt Options, v vocab) []tensor {
	r := &rng{s: opt.Seed}
	e, ff, nv := opt.Embedding, opt.FeedForward, len(v.tokens)
	code := codes(r, e)

	embd := make([]float32, 0, e*nv)
	for t := range nv {
		embd = append(embd, code[v.last[t]]...)
	}
	out := make([]float32, e*nv)
	scale := opt.Logit / float32(e)
	for b := range 256 {
		row := out[int(Successor(opt.Variant, byte(b)))*e:]
		for j, c := range code[b] {
			row[j] += scale * c
		}
	}
	ones := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = 1
		}
		return s
	}
	noise := func(n int, a float32) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = r.uniform(a)
		}
		return s
	}
	f16 := func(name string, data []float32, ne ...uint64) tensor {
		return tensor{name: name, ne: ne, typ: tensorF16, data: data}
	}
	E, FF := uint64(e), uint64(ff)
	ts := []tensor{f16("token_embd.weight", embd, E, uint64(nv))}
	for l := range opt.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			tensor{name: p + "attn_norm.weight", ne: []uint64{E}, typ: tensorF32, data: ones(e)},
			f16(p+"attn_q.weight", noise(e*e, 0.05), E, E),
			f16(p+"attn_k.weight", noise(e*e, 0.05), E, E),
			f16(p+"attn_v.weight", noise(e*e, 0.05), E, E),
			f16(p+"attn_output.weight", make([]float32, e*e), E, E),
			tensor{name: p + "ffn_norm.weight", ne: []uint64{E}, typ: tensorF32, data: ones(e)},
			f16(p+"ffn_gate.weight", noise(e*ff, 0.05), E, FF),
			f16(p+"ffn_up.weight", noise(e*ff, 0.05), E, FF),
			f16(p+"ffn_down.weight", make([]float32, ff*e), FF, E),
		)
	}
	ts = append(ts,
		tensor{name: "output_norm.weight", ne: []uint64{E}, typ: tensorF32, data: ones(e)},
		f16("output.weight", out, E, uint64(nv)),
	)
	return ts
}

// kv is one metadata pair; value is uint32, int32, float32, bool, string,
// []string or []int32.
type kv struct {
	key   string
	value any
}

func buildKVs(opt Options, v vocab) []kv {
	return []kv{
		{"general.architecture", "llama"},
		{"general.name", opt.Name},
		{"general.file_type", uint32(fileTypeMostlyF16)},
		{"general.alignment", uint32(alignment)},
		{"llama.vocab_size", uint32(len(v.tokens))},
		{"llama.context_length", uint32(opt.Context)},
		{"llama.embedding_length", uint32(opt.Embedding)},
		{"llama.block_count", uint32(opt.Layers)},
		{"llama.feed_forward_length", uint32(opt.FeedForward)},
		{"llama.attention.head_count", uint32(opt.Heads)},
		{"llama.attention.head_count_kv", uint32(opt.Heads)},
		{"llama.rope.dimension_count", uint32(opt.Embedding / opt.Heads)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", Pre},
		{"tokenizer.ggml.tokens", v.tokens},
		{"tokenizer.ggml.token_type", v.types},
		{"tokenizer.ggml.merges", merges},
		{"tokenizer.ggml.bos_token_id", uint32(v.bos)},
		{"tokenizer.ggml.eos_token_id", uint32(v.eos)},
		{"tokenizer.ggml.padding_token_id", uint32(v.bos)},
		{"tokenizer.ggml.add_bos_token", false},
		{"tokenizer.ggml.add_eos_token", false},
		{"tokenizer.chat_template", ChatTemplate},
	}
}

// Write writes the model described by opt to w as a GGUF v3 file.
func Write(w io.Writer, opt Options) error {
	if err := opt.Validate(); err != nil {
		return err
	}
	v := buildVocab()
	ts := buildTensors(opt, v)
	kvs := buildKVs(opt, v)

	bw := bufio.NewWriterSize(w, 1<<16)
	cw := &countWriter{w: bw}
	gw := ggufWriter{w: cw}
	gw.u32(ggufMagic)
	gw.u32(ggufVersion)
	gw.u64(uint64(len(ts)))
	gw.u64(uint64(len(kvs)))
	for _, p := range kvs {
		gw.str(p.key)
		gw.value(p.value)
	}
	var off uint64
	for _, t := range ts {
		gw.str(t.name)
		gw.u32(uint32(len(t.ne)))
		for _, d := range t.ne {
			gw.u64(d)
		}
		gw.u32(t.typ)
		gw.u64(off)
		off = alignUp(off + t.size())
	}
	gw.pad()
	for _, t := range ts {
		for _, f := range t.data {
			if t.typ == tensorF16 {
				gw.u16(f32ToF16(f))
			} else {
				gw.u32(math.Float32bits(f))
			}
		}
		gw.pad()
	}
	if gw.err != nil {
		return fmt.Errorf("tinygguf: write: %w", gw.err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("tinygguf: write: %w", err)
	}
	return nil
}

func alignUp(n uint64) uint64 { return (n + alignment - 1) / alignment * alignment }

type countWriter struct {
	w io.Writer
	n uint64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

// ggufWriter keeps the first error, so encoding reads straight through.
type ggufWriter struct {
	w   *countWriter
	buf [8]byte
	err error
}

func (g *ggufWriter) write(p []byte) {
	if g.err == nil {
		_, g.err = g.w.Write(p)
	}
}

func (g *ggufWriter) u16(x uint16) {
	binary.LittleEndian.PutUint16(g.buf[:], x)
	g.write(g.buf[:2])
}

func (g *ggufWriter) u32(x uint32) {
	binary.LittleEndian.PutUint32(g.buf[:], x)
	g.write(g.buf[:4])
}

func (g *ggufWriter) u64(x uint64) {
	binary.LittleEndian.PutUint64(g.buf[:], x)
	g.write(g.buf[:8])
}

func (g *ggufWriter) str(s string) {
	g.u64(uint64(len(s)))
	g.write([]byte(s))
}

func (g *ggufWriter) pad() {
	if n := alignUp(g.w.n) - g.w.n; n > 0 {
		g.write(make([]byte, n))
	}
}

func (g *ggufWriter) value(v any) {
	switch x := v.(type) {
	case uint32:
		g.u32(kvUint32)
		g.u32(x)
	case int32:
		g.u32(kvInt32)
		g.u32(uint32(x))
	case float32:
		g.u32(kvFloat32)
		g.u32(math.Float32bits(x))
	case bool:
		g.u32(kvBool)
		if x {
			g.write([]byte{1})
		} else {
			g.write([]byte{0})
		}
	case string:
		g.u32(kvString)
		g.str(x)
	case []string:
		g.u32(kvArray)
		g.u32(kvString)
		g.u64(uint64(len(x)))
		for _, s := range x {
			g.str(s)
		}
	case []int32:
		g.u32(kvArray)
		g.u32(kvInt32)
		g.u64(uint64(len(x)))
		for _, i := range x {
			g.u32(uint32(i))
		}
	default:
		if g.err == nil {
			g.err = fmt.Errorf("unsupported metadata type %T", v)
		}
	}
}

// f32ToF16 converts to IEEE half precision, rounding to nearest even.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	e := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if e == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	exp := e - 127 + 15
	if exp >= 0x1f {
		return sign | 0x7c00
	}
	if exp <= 0 {
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		mant += half - 1 + (mant>>shift)&1
		return sign | uint16(mant>>shift)
	}
	mant += 0xfff + (mant>>13)&1
	if mant&0x800000 != 0 {
		mant = 0
		exp++
		if exp >= 0x1f {
			return sign | 0x7c00
		}
	}
	return sign | uint16(exp<<10) | uint16(mant>>13)
}
