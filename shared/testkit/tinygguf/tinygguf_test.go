package tinygguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gguf "github.com/gpustack/gguf-parser-go"
)

func write(t *testing.T, opt Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, opt); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return b.Bytes()
}

func TestWriteIsDeterministic(t *testing.T) {
	for _, variant := range []string{VariantChain, VariantRepeat} {
		opt := DefaultOptions()
		opt.Variant = variant
		a, b := write(t, opt), write(t, opt)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: two writes differ", variant)
		}
	}
	chain, repeat := DefaultOptions(), DefaultOptions()
	repeat.Variant = VariantRepeat
	if bytes.Equal(write(t, chain), write(t, repeat)) {
		t.Fatal("chain and repeat variants wrote the same bytes")
	}
}

// TestDigests pins the bytes: blobs are content-addressed, so a change
// here changes every stored model digest. Update the digests only on
// purpose.
func TestDigests(t *testing.T) {
	for variant, want := range map[string]string{
		VariantChain:  "7907da87abc9feeeae2a26f0186b78f26e280b73ce53a7c1ada1bf5fb77281b3",
		VariantRepeat: "0f7569d59e86983ecf0ba4396eed13f4b578e25c6c1c96aa00a405f1e129b64f",
	} {
		opt := DefaultOptions()
		opt.Variant = variant
		if got := fmt.Sprintf("%x", sha256.Sum256(write(t, opt))); got != want {
			t.Errorf("%s model sha256 %s, want %s", variant, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Options){
		"variant":     func(o *Options) { o.Variant = "loop" },
		"embedding":   func(o *Options) { o.Embedding = 384 },
		"heads":       func(o *Options) { o.Heads = 3 },
		"feedforward": func(o *Options) { o.FeedForward = 500 },
		"layers":      func(o *Options) { o.Layers = 0 },
		"logit":       func(o *Options) { o.Logit = float32(math.NaN()) },
	} {
		opt := DefaultOptions()
		mutate(&opt)
		if err := Write(&bytes.Buffer{}, opt); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: Write returned %v, want ErrInvalidOptions", name, err)
		}
	}
}

func parse(t *testing.T, opt Options) (*gguf.GGUFFile, []byte) {
	t.Helper()
	data := write(t, opt)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.ParseGGUFFile(path)
	if err != nil {
		t.Fatalf("gguf-parser-go: %v", err)
	}
	return f, data
}

func TestParsesAsLlama(t *testing.T) {
	opt := DefaultOptions()
	f, _ := parse(t, opt)

	a := f.Architecture()
	if a.Architecture != "llama" || a.BlockCount != 2 || a.EmbeddingLength != 256 ||
		a.AttentionHeadCount != 4 || a.AttentionHeadCountKV != 4 || a.MaximumContextLength != 2048 ||
		fmt.Sprint(a.FeedForwardLength) != "[512 512]" {
		t.Errorf("architecture = %+v", a)
	}
	kvs := f.Header.MetadataKV
	for key, want := range map[string]uint32{
		"general.file_type":          1,
		"general.alignment":          32,
		"llama.rope.dimension_count": 64,
	} {
		if kv, ok := kvs.Get(key); !ok || kv.ValueUint32() != want {
			t.Errorf("%s = %v (found %v), want %d", key, kv.Value, ok, want)
		}
	}
	for _, key := range []string{"llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"} {
		if kv, ok := kvs.Get(key); !ok || kv.ValueFloat32() <= 0 {
			t.Errorf("%s missing or not positive", key)
		}
	}
	if kv, ok := kvs.Get("general.name"); !ok || kv.ValueString() != opt.Name {
		t.Errorf("general.name = %v", kv.Value)
	}

	tok := f.Tokenizer()
	nv := 256 + len(merges) + 3
	if tok.Model != "gpt2" || tok.TokensLength != uint64(nv) || tok.MergesLength != uint64(len(merges)) ||
		tok.BOSTokenID != int64(nv-3) || tok.EOSTokenID != int64(nv-1) {
		t.Errorf("tokenizer = %+v", tok)
	}
	tokens, _ := kvs.Get("tokenizer.ggml.tokens")
	types, _ := kvs.Get("tokenizer.ggml.token_type")
	ts, ty := tokens.ValueArray().ValuesString(), types.ValueArray().ValuesInt32()
	if len(ts) != nv || len(ty) != nv {
		t.Fatalf("%d tokens, %d token types, want %d", len(ts), len(ty), nv)
	}
	for id, want := range map[int]string{'a': "a", ' ': "Ġ", '\n': "Ċ", 256: "Ġt", nv - 3: "<|endoftext|>", nv - 2: "<|im_start|>", nv - 1: "<|im_end|>"} {
		if ts[id] != want {
			t.Errorf("token %d = %q, want %q", id, ts[id], want)
		}
	}
	for id, typ := range ty {
		if want := int32(1); id >= nv-3 && typ != 3 || id < nv-3 && typ != want {
			t.Errorf("token %d (%q) has type %d", id, ts[id], typ)
		}
	}
	for _, key := range []string{"tokenizer.ggml.pre", "tokenizer.chat_template"} {
		if kv, ok := kvs.Get(key); !ok || kv.ValueString() == "" {
			t.Errorf("%s missing", key)
		}
	}

	want := map[string][]uint64{
		"token_embd.weight":  {256, uint64(nv)},
		"output_norm.weight": {256},
		"output.weight":      {256, uint64(nv)},
	}
	for l := range 2 {
		p := fmt.Sprintf("blk.%d.", l)
		for _, n := range []string{"attn_q", "attn_k", "attn_v", "attn_output"} {
			want[p+n+".weight"] = []uint64{256, 256}
		}
		want[p+"attn_norm.weight"] = []uint64{256}
		want[p+"ffn_norm.weight"] = []uint64{256}
		want[p+"ffn_gate.weight"] = []uint64{256, 512}
		want[p+"ffn_up.weight"] = []uint64{256, 512}
		want[p+"ffn_down.weight"] = []uint64{512, 256}
	}
	if len(f.TensorInfos) != len(want) {
		t.Errorf("%d tensors, want %d", len(f.TensorInfos), len(want))
	}
	for _, ti := range f.TensorInfos {
		dims, ok := want[ti.Name]
		if !ok {
			t.Errorf("unexpected tensor %s", ti.Name)
			continue
		}
		if fmt.Sprint(ti.Dimensions) != fmt.Sprint(dims) {
			t.Errorf("%s dims %v, want %v", ti.Name, ti.Dimensions, dims)
		}
		wantType := gguf.GGMLTypeF16
		if len(dims) == 1 {
			wantType = gguf.GGMLTypeF32
		}
		if ti.Type != wantType {
			t.Errorf("%s type %v, want %v", ti.Name, ti.Type, wantType)
		}
		if ti.Offset%32 != 0 {
			t.Errorf("%s offset %d not 32-byte aligned", ti.Name, ti.Offset)
		}
	}
	if f.TensorDataStartOffset%32 != 0 {
		t.Errorf("tensor data starts at %d, not 32-byte aligned", f.TensorDataStartOffset)
	}
}

// tensorF16 decodes one F16 tensor of the written file.
func readF16(t *testing.T, f *gguf.GGUFFile, data []byte, name string) []float32 {
	t.Helper()
	for _, ti := range f.TensorInfos {
		if ti.Name != name {
			continue
		}
		n := uint64(1)
		for _, d := range ti.Dimensions {
			n *= d
		}
		raw := data[uint64(f.TensorDataStartOffset)+ti.Offset:][:2*n]
		out := make([]float32, n)
		for i := range out {
			out[i] = f16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		return out
	}
	t.Fatalf("no tensor %s", name)
	return nil
}

func f16ToF32(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10)&0x1f, float64(h&0x3ff)
	switch e {
	case 0:
		return sign * float32(m*math.Pow(2, -24))
	case 0x1f:
		if m != 0 {
			return float32(math.NaN())
		}
		return sign * float32(math.Inf(1))
	}
	return sign * float32((1+m/1024)*math.Pow(2, float64(e-15)))
}

// TestLogitsFollowSuccessor recomputes, from the written F16 weights, the
// logits the model gives after every token (the residual stream is the
// token's embedding, RMS-normalised) and checks the successor wins by the
// configured margin.
func TestLogitsFollowSuccessor(t *testing.T) {
	for _, variant := range []string{VariantChain, VariantRepeat} {
		opt := DefaultOptions()
		opt.Variant = variant
		f, data := parse(t, opt)
		embd := readF16(t, f, data, "token_embd.weight")
		out := readF16(t, f, data, "output.weight")
		for _, name := range []string{"blk.0.attn_output.weight", "blk.1.ffn_down.weight"} {
			for _, w := range readF16(t, f, data, name) {
				if w != 0 {
					t.Fatalf("%s is not zero", name)
				}
			}
		}
		v := buildVocab()
		e := opt.Embedding
		for tok := range v.tokens {
			x := embd[tok*e : (tok+1)*e]
			var ss float64
			for _, xi := range x {
				ss += float64(xi) * float64(xi)
			}
			rms := math.Sqrt(ss/float64(e) + 1e-5)
			best, second, arg := math.Inf(-1), math.Inf(-1), -1
			for j := range v.tokens {
				var l float64
				for i, w := range out[j*e : (j+1)*e] {
					l += float64(w) * float64(x[i]) / rms
				}
				if l > best {
					best, second, arg = l, best, j
				} else if l > second {
					second = l
				}
			}
			want := int(Successor(variant, v.last[tok]))
			if arg != want || best-second < 0.9*float64(opt.Logit) {
				t.Fatalf("%s: after token %d (%q) argmax %d (logit %.2f, runner-up %.2f), want %d",
					variant, tok, v.tokens[tok], arg, best, second, want)
			}
		}
	}
}

// TestChainNeverRepeats walks the chain map from every byte the way
// Ollama's runner client counts repeats (identical whitespace-trimmed
// pieces; it aborts once the count passes 30) and checks the count stays
// far below that, while the repeat variant trips it.
func TestChainNeverRepeats(t *testing.T) {
	runs := func(variant string, start byte) int {
		var last string
		var repeat, most int
		b := start
		for range 1000 {
			b = Successor(variant, b)
			piece := strings.TrimSpace(string(rune(b)))
			if piece == last {
				repeat++
			} else {
				last, repeat = piece, 0
			}
			most = max(most, repeat)
		}
		return most
	}
	for b := range 256 {
		// Ollama's count starts from an empty piece, so a leading space
		// counts once.
		if n := runs(VariantChain, byte(b)); n > 1 {
			t.Fatalf("chain from byte %d repeats a piece %d times in a row", b, n)
		}
		if n := runs(VariantRepeat, byte(b)); n <= 30 {
			t.Fatalf("repeat variant from byte %d repeats only %d times", b, n)
		}
	}
	if got, want := Expected(VariantChain, '\n', 30), "abcdefghijklmnopqrstuvwxyz abc"; got != want {
		t.Errorf("Expected = %q, want %q", got, want)
	}
}

func TestF32ToF16(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.1, 0x2e66}, {65504, 0x7bff}, {1e6, 0x7c00},
		{float32(math.Pow(2, -24)), 0x0001}, {float32(math.Pow(2, -14)), 0x0400}, {1e-9, 0},
		{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, // ties round to even
	} {
		if got := f32ToF16(c.f); got != c.h {
			t.Errorf("f32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
		if c.h != 0x7c00 && c.f > 1e-8 && f16ToF32(c.h) != f16ToF32(f32ToF16(c.f)) {
			t.Errorf("round trip of %g", c.f)
		}
	}
}
