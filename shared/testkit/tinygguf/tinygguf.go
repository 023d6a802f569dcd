// Package tinygguf writes a tiny llama-architecture GGUF model whose output
// is fixed by construction, for tests, the quick start and benchmarks.
//
// The model is real enough for Ollama to load, quantize (q8_0, q4_K_M) and
// run, yet it never needs downloaded weights: every byte is computed from
// Options, so Write produces identical files from run to run. It must never
// read the clock, iterate a map or use a randomly seeded generator.
//
// How the output is fixed: the attention output and FFN down projections
// are zero, so the residual stream that reaches the output head is exactly
// the embedding of the last token. Each byte token's embedding is a distinct
// row of a (scrambled) Hadamard matrix, so the embeddings are ±1 codes that
// are exactly orthogonal to each other. Row j of output.weight is the sum of
// the codes of the bytes whose successor is j, so the logit of the successor
// is Options.Logit and every other logit is 0. A merged token embeds like its
// last byte and a control token like "\n". Generation therefore follows the
// Successor map from the last byte of the prompt.
package tinygguf

import (
	"errors"
	"fmt"
	"math"
)

// Variants of the successor map.
const (
	// VariantChain walks "abcdefghijklmnopqrstuvwxyz abc…": every other byte
	// leads to 'a'. No token follows itself.
	VariantChain = "chain"
	// VariantRepeat sends every byte to RepeatToken, so generation repeats
	// one token forever (Ollama ends such a stream after 30 repeats).
	VariantRepeat = "repeat"
)

// RepeatToken is the byte that the repeat variant generates forever.
const RepeatToken = 'a'

// Options shape the model. The zero value is not valid; start from
// DefaultOptions.
type Options struct {
	// Variant selects the successor map: VariantChain or VariantRepeat.
	Variant string
	// Name is written to general.name.
	Name string
	// Layers is the number of transformer blocks (llama.block_count).
	Layers int
	// Embedding is the hidden size (llama.embedding_length). It must be a
	// power of two of at least 256 (one orthogonal code per byte), which also
	// keeps rows a multiple of 256 as q4_K_M needs.
	Embedding int
	// Heads is the number of attention heads; key/value heads are the same.
	Heads int
	// FeedForward is the FFN width (llama.feed_forward_length), a multiple
	// of 256.
	FeedForward int
	// Context is the trained context length in tokens (llama.context_length).
	Context int
	// Logit is the logit of the successor token; every other logit is 0.
	// 24 makes any other token less likely than 1e-9 at temperature 0.8.
	Logit float32
	// Seed drives the fixed pseudo-random generator that scrambles the codes
	// and fills the weights that do not affect the output.
	Seed uint64
}

// DefaultOptions is the model the project tests against: 2 layers,
// embedding 256, 4 heads, FFN 512, context 2048, the chain variant.
func DefaultOptions() Options {
	return Options{
		Variant:     VariantChain,
		Name:        "meridian-tiny",
		Layers:      2,
		Embedding:   256,
		Heads:       4,
		FeedForward: 512,
		Context:     2048,
		Logit:       24,
		Seed:        0x6d6572696469616e, // "meridian"
	}
}

// ErrInvalidOptions wraps every validation failure.
var ErrInvalidOptions = errors.New("tinygguf: invalid options")

// Validate reports the first option that Write cannot honour.
func (o Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Variant != VariantChain && o.Variant != VariantRepeat:
		return bad("variant %q is neither %q nor %q", o.Variant, VariantChain, VariantRepeat)
	case o.Layers < 1 || o.Layers > 64:
		return bad("layers %d not in [1, 64]", o.Layers)
	case o.Embedding < 256 || o.Embedding > 8192 || o.Embedding&(o.Embedding-1) != 0:
		return bad("embedding %d is not a power of two in [256, 8192]", o.Embedding)
	case o.Heads < 1 || o.Embedding%o.Heads != 0 || (o.Embedding/o.Heads)%2 != 0:
		return bad("heads %d must divide embedding %d into even head sizes", o.Heads, o.Embedding)
	case o.FeedForward < 256 || o.FeedForward > 32768 || o.FeedForward%256 != 0:
		return bad("feed-forward %d is not a multiple of 256 in [256, 32768]", o.FeedForward)
	case o.Context < 16 || o.Context > 1<<20:
		return bad("context %d not in [16, 1048576]", o.Context)
	case !(o.Logit > 0 && o.Logit < 1000):
		return bad("logit %v not in (0, 1000)", o.Logit)
	}
	return nil
}

// Successor is the variant's map from a byte to the byte generated after
// it.
func Successor(variant string, b byte) byte {
	if variant == VariantRepeat {
		return RepeatToken
	}
	switch {
	case b >= 'a' && b < 'z':
		return b + 1
	case b == 'z':
		return ' '
	default:
		return 'a'
	}
}

// Expected returns the first n bytes the model generates after a prompt
// whose last token ends with byte last. A chat through Ollama's ChatML
// template ends its prompt with "<|im_start|>assistant\n", so the reply of
// the chain variant is Expected(VariantChain, '\n', n):
// "abcdefghijklmnopqrstuvwxyz abc…", whatever the messages say.
func Expected(variant string, last byte, n int) string {
	out := make([]byte, 0, n)
	for range n {
		last = Successor(variant, last)
		out = append(out, last)
	}
	return string(out)
}

// Embedding is the unit vector Ollama's /api/embed returns for text from
// the unquantized model (quantized models return a vector within a few
// degrees of it). The model's hidden state is the embedding of the last
// token, and every token embeds like its last byte, so the vector is the
// normalised code of text's last byte: texts ending in the same byte embed
// identically, texts ending in different bytes are orthogonal. It returns
// nil for empty text or invalid options.
func Embedding(opt Options, text string) []float32 {
	if text == "" || opt.Validate() != nil {
		return nil
	}
	code := codes(&rng{s: opt.Seed}, opt.Embedding)[text[len(text)-1]]
	norm := float32(1 / math.Sqrt(float64(opt.Embedding)))
	out := make([]float32, len(code))
	for i, c := range code {
		out[i] = c * norm
	}
	return out
}
