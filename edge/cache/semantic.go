package cache

import (
	"errors"
	"math"
	"sync"
)

// Semantic is the semantic cache's index: for each context (ContextKeyOf:
// tenant, model, system prompt, tools, parameters and earlier turns, all
// exact), the embeddings of the last user turns whose answers the store
// holds, each with its answer's exact Key. A lookup compares a new last
// user turn with the context's embeddings only, by cosine similarity,
// exactly (brute force): no approximate index is used, so a lookup costs
// O(n·d) for the n vectors of one context, and the whole index holds at
// most MaxVectors vectors (the oldest go first). The answers themselves
// stay in the Store, with its TTL and byte cap: a match whose answer
// has expired or was evicted is no hit.
//
// It is safe for concurrent use.
type Semantic struct {
	mu       sync.Mutex
	max      int
	contexts map[Key]*vectors
	// fifo is every vector in the order added, for eviction by age.
	fifo []slot
	head int
	n    int    // vectors held
	seq  uint64 // of the last vector added
}

type vectors struct {
	vecs [][]float32
	keys []Key
	seqs []uint64
}

// slot names a vector by its context, its answer key and the sequence
// number it was added with, so a slot outlived by a newer vector for
// the same answer drops nothing.
type slot struct {
	ctx Key
	key Key
	seq uint64
}

// DefaultMaxVectors bounds a semantic index: 65,536 vectors (of 768
// dimensions, about 200 MiB at worst; the tiny test model's are far
// smaller).
const DefaultMaxVectors = 1 << 16

// NewSemantic returns an empty index that holds at most maxVectors
// vectors; 0 means DefaultMaxVectors.
func NewSemantic(maxVectors int) *Semantic {
	if maxVectors <= 0 {
		maxVectors = DefaultMaxVectors
	}
	return &Semantic{max: maxVectors, contexts: map[Key]*vectors{}}
}

// ErrBadVector is returned for a vector that has no direction.
var ErrBadVector = errors.New("cache: an embedding must be a finite, non-zero vector")

// Normalize scales v to unit length in place, so that a dot product is
// the cosine.
func Normalize(v []float32) error {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		return ErrBadVector
	}
	inv := float32(1 / math.Sqrt(sum))
	for i := range v {
		v[i] *= inv
	}
	return nil
}

// Search returns the answer key of the vector of ctx most similar to v
// (a unit vector), and the similarity; ok is false when ctx has none.
func (s *Semantic) Search(ctx Key, v []float32) (k Key, similarity float64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.contexts[ctx]
	if vs == nil {
		return Key{}, 0, false
	}
	best := -2.0
	for i, w := range vs.vecs {
		if len(w) != len(v) {
			continue // another embedding model's: incomparable
		}
		var dot float32
		for j := range w {
			dot += w[j] * v[j]
		}
		if d := float64(dot); d > best {
			best, k = d, vs.keys[i]
		}
	}
	if best < -1 {
		return Key{}, 0, false
	}
	return k, min(best, 1), true
}

// Add indexes v (a unit vector) for ctx, pointing at the answer key k.
// A vector already pointing at k is replaced.
func (s *Semantic) Add(ctx Key, v []float32, k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.contexts[ctx]
	if vs == nil {
		vs = &vectors{}
		s.contexts[ctx] = vs
	}
	s.seq++
	for i := range vs.keys {
		if vs.keys[i] == k {
			vs.vecs[i], vs.seqs[i] = v, s.seq
			s.fifo = append(s.fifo, slot{ctx, k, s.seq})
			return
		}
	}
	vs.vecs, vs.keys, vs.seqs = append(vs.vecs, v), append(vs.keys, k), append(vs.seqs, s.seq)
	s.n++
	s.fifo = append(s.fifo, slot{ctx, k, s.seq})
	for s.n > s.max {
		s.drop(s.fifo[s.head])
		s.head++
	}
	switch {
	case len(s.fifo)-s.head > 2*s.max+1024:
		// Replacements left stale slots behind: keep the live ones.
		live := make([]slot, 0, s.n)
		for _, sl := range s.fifo[s.head:] {
			if vs := s.contexts[sl.ctx]; vs != nil {
				for i := range vs.keys {
					if vs.keys[i] == sl.key && vs.seqs[i] == sl.seq {
						live = append(live, sl)
						break
					}
				}
			}
		}
		s.fifo, s.head = live, 0
	case s.head > len(s.fifo)/2 && s.head > 1024:
		s.fifo, s.head = append([]slot(nil), s.fifo[s.head:]...), 0
	}
}

func (s *Semantic) drop(sl slot) {
	vs := s.contexts[sl.ctx]
	if vs == nil {
		return
	}
	for i := range vs.keys {
		if vs.keys[i] == sl.key && vs.seqs[i] == sl.seq {
			last := len(vs.keys) - 1
			vs.keys[i], vs.vecs[i], vs.seqs[i] = vs.keys[last], vs.vecs[last], vs.seqs[last]
			vs.keys, vs.vecs, vs.seqs = vs.keys[:last], vs.vecs[:last], vs.seqs[:last]
			s.n--
			break
		}
	}
	if len(vs.keys) == 0 {
		delete(s.contexts, sl.ctx)
	}
}

// Len is the number of vectors indexed.
func (s *Semantic) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
