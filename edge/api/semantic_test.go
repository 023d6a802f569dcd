package api_test

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/shared/table"
)

// semanticFixture is testdata/semantic_cache.json.
type semanticFixture struct {
	Threshold float64 `json:"threshold"`
	Questions []struct {
		System      string   `json:"system"`
		Question    string   `json:"question"`
		Paraphrases []string `json:"paraphrases"`
		NearMisses  []struct {
			Why       string   `json:"why"`
			Question  string   `json:"question"`
			System    *string  `json:"system"`
			Tools     bool     `json:"tools"`
			MaxTokens int      `json:"max_tokens"`
			Seed      *int     `json:"seed"`
			History   []string `json:"history"`
		} `json:"near_misses"`
	} `json:"questions"`
}

// semBody is a deterministic chat request; history alternates user and
// assistant turns before the question.
func semBody(system, question string, tools bool, maxTokens int, seed *int, history []string) string {
	var msgs []map[string]string
	if system != "" {
		msgs = append(msgs, map[string]string{"role": "system", "content": system})
	}
	for i, h := range history {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, map[string]string{"role": role, "content": h})
	}
	msgs = append(msgs, map[string]string{"role": "user", "content": question})
	if maxTokens == 0 {
		maxTokens = 64
	}
	req := map[string]any{"model": "m", "temperature": 0, "max_tokens": maxTokens, "messages": msgs}
	if tools {
		req["tools"] = []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup_account", "parameters": map[string]any{"type": "object"}}}}
	}
	if seed != nil {
		req["seed"] = *seed
	}
	b, _ := json.Marshal(req)
	return string(b)
}

// semanticSurfaces serve m with the semantic cache at threshold, its
// embeddings from model "embed" (the tiny model's, tinyEmbedding).
func semanticSurfaces(t *testing.T, threshold float64) *cacheSurfaces {
	tab := cacheTable(1, func(tb *table.Table) {
		tb.Routes[0].Cache.Similarity = threshold
		tb.Models = append(tb.Models, table.Model{ID: "embed"})
		tb.Routes = append(tb.Routes, &table.Route{Model: "embed", Targets: []table.Target{{Provider: "q"}}})
	})
	return newCacheSurfaces(t, tab, func(c *api.Config) { c.Semantic, c.SemanticModel = cache.NewSemantic(0), "embed" })
}

// TestSemanticCacheFixture asks each question of the fixture, then its
// paraphrases, which must all hit with the similarity reported, and its
// near-misses, each on a fresh edge that knows only the question, which
// must all miss.
func TestSemanticCacheFixture(t *testing.T) {
	raw, err := os.ReadFile("testdata/semantic_cache.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx semanticFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Questions) == 0 || fx.Threshold <= 0 {
		t.Fatal("an empty fixture")
	}
	for _, q := range fx.Questions {
		s := semanticSurfaces(t, fx.Threshold)
		expect(t, q.Question, s.send(chatPath, keyA, semBody(q.System, q.Question, false, 0, nil, nil)), "miss", "answer-1")
		for _, p := range q.Paraphrases {
			w := s.send(chatPath, keyA, semBody(q.System, p, false, 0, nil, nil))
			expect(t, "paraphrase "+strconv.Quote(p), w, "hit", "answer-1")
			if sim, err := strconv.ParseFloat(w.h.Get(api.HeaderCacheSimilarity), 64); err != nil || sim < fx.Threshold || sim > 1 {
				t.Fatalf("paraphrase %q: similarity %q", p, w.h.Get(api.HeaderCacheSimilarity))
			}
		}
		// Another tenant never hits, however similar.
		expect(t, "another tenant", s.send(chatPath, keyB, semBody(q.System, q.Paraphrases[0], false, 0, nil, nil)), "miss")
		for _, nm := range q.NearMisses {
			s := semanticSurfaces(t, fx.Threshold)
			expect(t, q.Question, s.send(chatPath, keyA, semBody(q.System, q.Question, false, 0, nil, nil)), "miss", "answer-1")
			system := q.System
			if nm.System != nil {
				system = *nm.System
			}
			w := s.send(chatPath, keyA, semBody(system, nm.Question, nm.Tools, nm.MaxTokens, nm.Seed, nm.History))
			if got := w.h.Get(api.HeaderCache); got != "miss" || strings.Contains(w.body(), "answer-1") || w.h.Get(api.HeaderCacheSimilarity) != "" {
				t.Fatalf("near-miss %q (%s): x-meridian-cache %q, body %s", nm.Question, nm.Why, got, w.body())
			}
		}
	}
}

// Without a similarity in the policy the semantic cache is not used,
// and an exact hit carries no similarity.
func TestSemanticCacheNeedsPolicy(t *testing.T) {
	s := semanticSurfaces(t, 0)
	body := semBody("sys", "How do I reset my password?", false, 0, nil, nil)
	expect(t, "first", s.send(chatPath, keyA, body), "miss", "answer-1")
	expect(t, "paraphrase", s.send(chatPath, keyA, semBody("sys", "how do i reset my password?", false, 0, nil, nil)), "miss", "answer-2")
	if w := s.send(chatPath, keyA, body); w.h.Get(api.HeaderCache) != "hit" || w.h.Get(api.HeaderCacheSimilarity) != "" {
		t.Fatalf("exact hit: %q, similarity %q", w.h.Get(api.HeaderCache), w.h.Get(api.HeaderCacheSimilarity))
	}
}
