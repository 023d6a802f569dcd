package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/usage"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// counting is an upstream whose every answer is new: its text names the
// call ("answer-N"), so a test can tell a cached answer from a fresh one.
// A stream sends 4 chunks in bursts of 2, 1 and 1, then reports usage.
type counting struct {
	calls *atomic.Int64
	// byProvider counts calls per provider ID.
	mu         *sync.Mutex
	byProvider map[string]int
	id         string
}

func (c counting) Do(_ context.Context, req *llm.Request, _ string) (*llm.Response, error) {
	if req.Op == llm.OpEmbedding {
		return tinyEmbedding(req)
	}
	n := c.calls.Add(1)
	c.mu.Lock()
	c.byProvider[c.id]++
	c.mu.Unlock()
	u := llm.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30}
	if req.Stream {
		return &llm.Response{Stream: &burstStream{n: n, bursts: []int{2, 1, 1}, u: u}}, nil
	}
	body := fmt.Sprintf(`{"id":"chatcmpl-%d","object":"chat.completion","created":1,"model":"up-m","choices":[{"index":0,"message":{"role":"assistant","content":"answer-%d"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`, n, n)
	return &llm.Response{Body: []byte(body), Usage: u}, nil
}
func (counting) Close() {}

// burstStream delivers its chunks in bursts: Buffered reports the rest
// of a burst as in memory.
type burstStream struct {
	n      int64
	bursts []int
	i      int // chunks sent
	u      llm.Usage
	c      llm.Chunk
}

func (s *burstStream) total() int {
	t := 0
	for _, b := range s.bursts {
		t += b
	}
	return t
}

func (s *burstStream) Next() (*llm.Chunk, error) {
	if s.i >= s.total() {
		return nil, io.EOF
	}
	s.c.SetRaw([]byte(fmt.Sprintf(`{"id":"chatcmpl-%d","object":"chat.completion.chunk","created":1,"model":"up-m","choices":[{"index":0,"delta":{"content":"a%d-%d "}}]}`, s.n, s.n, s.i)))
	s.i++
	return &s.c, nil
}

func (s *burstStream) Buffered() int {
	end := 0
	for _, b := range s.bursts {
		end += b
		if s.i < end {
			return end - s.i
		}
		if s.i == end {
			return 0
		}
	}
	return 0
}

func (s *burstStream) Usage() (llm.Usage, bool) { return s.u, s.i >= s.total() }
func (s *burstStream) Close() error             { return nil }

type cacheSurfaces struct {
	gw         *gateway.Gateway
	cfg        api.Config
	mux        *http.ServeMux
	calls      atomic.Int64
	mu         sync.Mutex
	byProvider map[string]int
	now        time.Time
	clock      sync.Mutex
}

func (s *cacheSurfaces) advance(d time.Duration) {
	s.clock.Lock()
	s.now = s.now.Add(d)
	s.clock.Unlock()
}

const (
	keyA, keyB, keyEU = "sk-cache-tenant-a-0123456789", "sk-cache-tenant-b-0123456789", "sk-cache-tenant-a-eu-0123456789"
)

// cacheTable routes m to p (region us), then q (region eu); keys A and
// EU belong to tenant a (EU only serves in eu), B to tenant b.
func cacheTable(rev uint64, edit func(*table.Table)) *table.Table {
	t := &table.Table{
		Revision: rev,
		Regions:  []table.Region{{ID: "eu"}, {ID: "us"}},
		Providers: []table.Provider{{ID: "p", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", Region: "us"},
			{ID: "q", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:2/v1", Region: "eu"}},
		Models: []table.Model{{ID: "m"}},
		Routes: []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "p", Model: "up-m"}, {Provider: "q", Model: "up-m"}}}},
		Prices: []table.Price{{Provider: "p", Model: "up-m", Input: 3, Output: 15, Cached: 0.5}, {Provider: "q", Model: "up-m", Input: 3, Output: 15}},
		Keys: []*table.Key{{ID: "ka", Hash: keyHash(keyA), Tenant: "a"}, {ID: "kb", Hash: keyHash(keyB), Tenant: "b"},
			{ID: "keu", Hash: keyHash(keyEU), Tenant: "a", AllowedRegions: []string{"eu"}}},
		Tenants: []table.Tenant{{ID: "a"}, {ID: "b"}},
	}
	if edit != nil {
		edit(t)
	}
	return t
}

func newCacheSurfaces(t testing.TB, tab *table.Table, extra func(*api.Config)) *cacheSurfaces {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &cacheSurfaces{byProvider: map[string]int{}, now: time.Unix(1_700_000_000, 0)}
	gw := gateway.New(gateway.Config{Logger: quiet, NewProvider: func(p table.Provider) (provider.Provider, error) {
		return counting{calls: &s.calls, mu: &s.mu, byProvider: s.byProvider, id: p.ID}, nil
	}})
	t.Cleanup(gw.Close)
	if err := gw.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	cc := cache.DefaultConfig()
	cc.Now = func() time.Time {
		s.clock.Lock()
		defer s.clock.Unlock()
		return s.now
	}
	store, err := cache.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	s.gw = gw
	s.cfg = api.Config{Gateway: gw, Logger: quiet, MaxBodyBytes: 8 << 20, Node: "edge-a", Region: "eu", Cache: store}
	if extra != nil {
		extra(&s.cfg)
	}
	s.mux = http.NewServeMux()
	openai.New(s.cfg).Register(s.mux)
	anthropic.New(s.cfg).Register(s.mux)
	return s
}

// pieceWriter is a ResponseWriter that keeps every Write apart, so a
// test sees how a stream was chunked onto the wire.
type pieceWriter struct {
	h      http.Header
	code   int
	pieces [][]byte
}

func (p *pieceWriter) Header() http.Header { return p.h }
func (p *pieceWriter) WriteHeader(c int) {
	if p.code == 0 {
		p.code = c
	}
}
func (p *pieceWriter) Write(b []byte) (int, error) {
	if p.code == 0 {
		p.code = 200
	}
	p.pieces = append(p.pieces, bytes.Clone(b))
	return len(b), nil
}
func (p *pieceWriter) Flush() {}

func (p *pieceWriter) body() string { return string(bytes.Join(p.pieces, nil)) }

func (s *cacheSurfaces) send(path, key, body string, hdr ...string) *pieceWriter {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+key)
	if path == messagesPath {
		r.Header.Set("Anthropic-Version", "2023-06-01")
	}
	r.Header.Set(api.HeaderRequestID, fmt.Sprintf("req-%d", reqSeq.Add(1)))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
	w := &pieceWriter{h: http.Header{}}
	s.mux.ServeHTTP(w, r)
	return w
}

const (
	chat0     = `{"model":"m","temperature":0,"max_tokens":8,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"what is 2+2?"}]}`
	messages0 = `{"model":"m","temperature":0,"max_tokens":8,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"what is 2+2?"}]}]}`
)

// expect checks a response's status, its x-meridian-cache and that its
// body holds want.
func expect(t *testing.T, what string, w *pieceWriter, status string, want ...string) {
	t.Helper()
	if w.code != http.StatusOK {
		t.Fatalf("%s: %d %s", what, w.code, w.body())
	}
	if got := w.h.Get(api.HeaderCache); got != status {
		t.Fatalf("%s: x-meridian-cache %q, want %q (route %q)", what, got, status, w.h.Get(api.HeaderRoute))
	}
	for _, s := range want {
		if !strings.Contains(w.body(), s) {
			t.Fatalf("%s: body lacks %q:\n%s", what, s, w.body())
		}
	}
}

func TestCacheHitAndMissAcrossFormats(t *testing.T) {
	s := newCacheSurfaces(t, cacheTable(1, nil), nil)
	expect(t, "first", s.send(chatPath, keyA, chat0), "miss", "answer-1")
	w := s.send(chatPath, keyA, chat0)
	expect(t, "second", w, "hit", "answer-1", `"prompt_tokens_details":{"cached_tokens":10}`)
	if r := w.h.Get(api.HeaderRoute); !strings.Contains(r, "target=cache") || !strings.Contains(r, "reason=cached-from-provider/p") {
		t.Fatalf("route header of a hit: %q", r)
	}
	var cc struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			Details      struct {
				Cached int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
		Choices []struct {
			Message struct{ Content string }
		}
	}
	if err := json.Unmarshal([]byte(w.body()), &cc); err != nil || cc.Usage.Details.Cached != 10 || cc.Usage.PromptTokens != 10 || cc.Choices[0].Message.Content != "answer-1" {
		t.Fatalf("hit body: %v %s", err, w.body())
	}
	// The same question in Anthropic's format shares the entry, and its
	// usage says the prompt was read from the cache.
	expect(t, "anthropic", s.send(messagesPath, keyA, messages0), "hit", `"text":"answer-1"`, `"cache_read_input_tokens":10`, `"input_tokens":0`)
	// Whitespace and key order do not matter; a different question does.
	expect(t, "reformatted", s.send(chatPath, keyA, strings.ReplaceAll(chat0, `,"`, `, "`)), "hit", "answer-1")
	expect(t, "other question", s.send(chatPath, keyA, strings.Replace(chat0, "2+2", "2+3", 1)), "miss", "answer-2")
	expect(t, "other max_tokens", s.send(chatPath, keyA, strings.Replace(chat0, `"max_tokens":8`, `"max_tokens":9`, 1)), "miss", "answer-3")
	expect(t, "unknown field", s.send(chatPath, keyA, strings.Replace(chat0, `"model"`, `"frequency_penalty":1,"model"`, 1)), "miss", "answer-4")
	if n := s.calls.Load(); n != 4 {
		t.Fatalf("upstream called %d times, want 4", n)
	}
}

func TestCachePolicyAndCacheControl(t *testing.T) {
	sampled := strings.Replace(chat0, `"temperature":0`, `"temperature":0.7`, 1)
	seeded := strings.Replace(sampled, `"model"`, `"seed":7,"model"`, 1)
	s := newCacheSurfaces(t, cacheTable(1, nil), nil)
	expect(t, "sampled", s.send(chatPath, keyA, sampled), "bypass", "answer-1")
	expect(t, "sampled again", s.send(chatPath, keyA, sampled), "bypass", "answer-2")
	expect(t, "seeded", s.send(chatPath, keyA, seeded), "miss", "answer-3")
	expect(t, "seeded again", s.send(chatPath, keyA, seeded), "hit", "answer-3")

	// no-cache: a fresh answer, stored; no-store: a fresh answer, kept
	// out of the cache.
	expect(t, "warm", s.send(chatPath, keyA, chat0), "miss", "answer-4")
	expect(t, "no-cache", s.send(chatPath, keyA, chat0, "Cache-Control", "no-cache"), "bypass", "answer-5")
	expect(t, "after no-cache", s.send(chatPath, keyA, chat0), "hit", "answer-5")
	expect(t, "no-store", s.send(chatPath, keyA, chat0, "Cache-Control", "max-age=0, No-Store"), "bypass", "answer-6")
	expect(t, "after no-store", s.send(chatPath, keyA, chat0), "hit", "answer-5")

	// A route that forces caches sampled requests; a tenant that says
	// off wins over it.
	if err := s.gw.SetTable(cacheTable(2, func(t *table.Table) { t.Routes[0].Cache.Mode = table.CacheForce })); err != nil {
		t.Fatal(err)
	}
	expect(t, "forced", s.send(chatPath, keyA, sampled), "miss", "answer-7")
	expect(t, "forced again", s.send(chatPath, keyA, sampled), "hit", "answer-7")
	if err := s.gw.SetTable(cacheTable(3, func(t *table.Table) {
		t.Routes[0].Cache.Mode = table.CacheForce
		t.Tenants[0].Cache.Mode = table.CacheOff
	})); err != nil {
		t.Fatal(err)
	}
	expect(t, "tenant off", s.send(chatPath, keyA, chat0), "bypass", "answer-8")
	// Not a chat: never cached, and still says so.
	w := s.send("/v1/embeddings", keyA, `{"model":"m","input":"x"}`)
	if got := w.h.Get(api.HeaderCache); got != "bypass" {
		t.Fatalf("embeddings: x-meridian-cache %q", got)
	}
	// A refusal says bypass too.
	if w := s.send(chatPath, "sk-nobody-0123456789", chat0); w.code != http.StatusUnauthorized || w.h.Get(api.HeaderCache) != "bypass" {
		t.Fatalf("refusal: %d %q", w.code, w.h.Get(api.HeaderCache))
	}
}

func TestCacheNeverCrossesTenantsOrRegions(t *testing.T) {
	s := newCacheSurfaces(t, cacheTable(1, nil), nil)
	expect(t, "tenant a", s.send(chatPath, keyA, chat0), "miss", "answer-1") // served by p, in us
	expect(t, "tenant b", s.send(chatPath, keyB, chat0), "miss", "answer-2")
	expect(t, "tenant a again", s.send(chatPath, keyA, chat0), "hit", "answer-1")
	expect(t, "tenant b again", s.send(chatPath, keyB, chat0), "hit", "answer-2")
	// Tenant a's EU-only key may not have an answer produced in us: it
	// misses, is routed to q in eu, and that answer replaces the entry.
	expect(t, "eu key", s.send(chatPath, keyEU, chat0), "miss", "answer-3")
	if s.byProvider["q"] != 1 {
		t.Fatalf("calls by provider: %v", s.byProvider)
	}
	expect(t, "eu key again", s.send(chatPath, keyEU, chat0), "hit", "answer-3")
	expect(t, "tenant a, eu answer", s.send(chatPath, keyA, chat0), "hit", "answer-3")
	// An edge outside the regions a request allows neither serves nor
	// stores it.
	if err := s.gw.SetTable(cacheTable(2, func(t *table.Table) { t.Tenants[1].AllowedRegions = []string{"us"} })); err != nil {
		t.Fatal(err)
	}
	expect(t, "b from an edge in eu", s.send(chatPath, keyB, chat0), "bypass", "answer-4")
}

func TestCacheTTL(t *testing.T) {
	s := newCacheSurfaces(t, cacheTable(1, func(t *table.Table) { t.Routes[0].Cache.TTL = 10 * time.Second }), nil)
	expect(t, "first", s.send(chatPath, keyA, chat0), "miss", "answer-1")
	s.advance(9 * time.Second)
	expect(t, "within ttl", s.send(chatPath, keyA, chat0), "hit", "answer-1")
	s.advance(time.Second)
	expect(t, "at ttl", s.send(chatPath, keyA, chat0), "miss", "answer-2")
	// An entry keeps the TTL it was stored with; without a policy TTL
	// the store's default (5 minutes) applies.
	if err := s.gw.SetTable(cacheTable(2, nil)); err != nil {
		t.Fatal(err)
	}
	expect(t, "stored under the old policy", s.send(chatPath, keyA, chat0), "hit", "answer-2")
	other := strings.Replace(chat0, "2+2", "3+3", 1)
	expect(t, "default ttl", s.send(chatPath, keyA, other), "miss", "answer-3")
	s.advance(5*time.Minute - time.Second)
	expect(t, "default ttl, later", s.send(chatPath, keyA, other), "hit", "answer-3")
	s.advance(time.Second)
	expect(t, "default ttl, over", s.send(chatPath, keyA, other), "miss", "answer-4")
}

// sseData returns the data lines of a server-sent event stream.
func sseData(body string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestCacheReplaysStreams(t *testing.T) {
	s := newCacheSurfaces(t, cacheTable(1, nil), nil)
	streamed := strings.Replace(chat0, `"model"`, `"stream":true,"model"`, 1)
	miss := s.send(chatPath, keyA, streamed)
	expect(t, "stream miss", miss, "miss", "a1-0 ", "a1-3 ", "data: [DONE]")
	hit := s.send(chatPath, keyA, streamed)
	expect(t, "stream hit", hit, "hit", "a1-0 ", "a1-3 ", "data: [DONE]")
	if hit.h.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("hit content type %q", hit.h.Get("Content-Type"))
	}
	// Replayed as it was sent: the same events in the same writes (a
	// burst of two chunks, then one by one).
	if len(hit.pieces) != len(miss.pieces) {
		t.Fatalf("hit written in %d pieces, the original in %d:\n%q\n%q", len(hit.pieces), len(miss.pieces), hit.pieces, miss.pieces)
	}
	for i := range miss.pieces {
		if !bytes.Equal(hit.pieces[i], miss.pieces[i]) {
			t.Fatalf("piece %d differs:\n%q\n%q", i, hit.pieces[i], miss.pieces[i])
		}
	}
	// A plain request is not answered from a stream.
	expect(t, "plain", s.send(chatPath, keyA, chat0), "miss", "answer-2")

	// With include_usage the replay ends with a usage chunk marked cached.
	withUsage := strings.Replace(streamed, `"model"`, `"stream_options":{"include_usage":true},"model"`, 1)
	expect(t, "usage hit", s.send(chatPath, keyA, withUsage), "hit", "a1-0 ")
	data := sseData(s.send(chatPath, keyA, withUsage).body())
	if len(data) != 6 || data[5] != "[DONE]" || !strings.Contains(data[4], `"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":10}}`) {
		t.Fatalf("replay with usage: %q", data)
	}

	// Anthropic's client gets the same answer as its own event stream.
	amsg := strings.Replace(messages0, `"model"`, `"stream":true,"model"`, 1)
	w := s.send(messagesPath, keyA, amsg)
	expect(t, "anthropic stream hit", w, "hit", "event: message_start", `"text":"a1-0 "`, `"text":"a1-3 "`, `"cache_read_input_tokens":10`, "event: message_stop")
	if s.calls.Load() != 2 {
		t.Fatalf("upstream called %d times, want 2", s.calls.Load())
	}
}

func TestCacheUsageRecords(t *testing.T) {
	nc, st := jsBus(t)
	uc := usage.DefaultConfig()
	uc.Node, uc.Dir = "edge-a", t.TempDir()
	rec, err := usage.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Start(nc); err != nil {
		t.Fatal(err)
	}
	s := newCacheSurfaces(t, cacheTable(1, nil), func(c *api.Config) { c.Usage = rec })
	streamed := strings.Replace(chat0, `"model"`, `"stream":true,"model"`, 1)
	for i, c := range []struct{ path, key, body, status string }{
		{chatPath, keyA, chat0, "miss"},
		{chatPath, keyA, chat0, "hit"},
		{chatPath, keyA, streamed, "miss"},
		{messagesPath, keyA, strings.Replace(messages0, `"model"`, `"stream":true,"model"`, 1), "hit"},
	} {
		expect(t, fmt.Sprintf("request %d", i), s.send(c.path, c.key, c.body), c.status)
	}
	got := streamRecords(t, st, 4)
	var cached, fresh int
	for id, r := range got {
		if r.TokensIn != 10 || r.TokensOut != 20 || r.Tenant != "a" || r.Status != 200 {
			t.Errorf("%s: %v", id, r)
		}
		switch {
		case r.Cached:
			cached++
			// The price of p, which produced the answers, at its cached rate.
			if want := usagewire.CostNanoUSD(10, 20, table.Price{Input: 0.5, Output: 0.5}); r.CostNanoUsd != want || r.Target != "cache" || r.TargetKind != "cache" {
				t.Errorf("hit %s: cost %d (want %d), target %q/%q", id, r.CostNanoUsd, want, r.Target, r.TargetKind)
			}
		default:
			fresh++
			if want := usagewire.CostNanoUSD(10, 20, table.Price{Input: 3, Output: 15}); r.CostNanoUsd != want || r.Target != "provider/p" {
				t.Errorf("miss %s: cost %d (want %d), target %q", id, r.CostNanoUsd, want, r.Target)
			}
		}
	}
	if cached != 2 || fresh != 2 {
		t.Fatalf("%d cached and %d fresh records, want 2 and 2", cached, fresh)
	}
}

// A hit costs nothing when the price sets no cached rate.
func TestCacheHitFreeWithoutCachedPrice(t *testing.T) {
	nc, st := jsBus(t)
	uc := usage.DefaultConfig()
	uc.Node, uc.Dir = "edge-a", t.TempDir()
	rec, err := usage.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Start(nc); err != nil {
		t.Fatal(err)
	}
	s := newCacheSurfaces(t, cacheTable(1, func(t *table.Table) { t.Prices[0].Cached = 0 }), func(c *api.Config) { c.Usage = rec })
	expect(t, "miss", s.send(chatPath, keyA, chat0), "miss")
	expect(t, "hit", s.send(chatPath, keyA, chat0), "hit")
	for id, r := range streamRecords(t, st, 2) {
		if r.Cached && r.CostNanoUsd != 0 {
			t.Errorf("hit %s cost %d, want 0", id, r.CostNanoUsd)
		}
	}
}

// tinyEmbedding answers an embedding request as the tiny test model
// does (tinygguf.Embedding), in OpenAI's shape.
func tinyEmbedding(req *llm.Request) (*llm.Response, error) {
	var in struct{ Input string }
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return nil, err
	}
	v := tinygguf.Embedding(tinygguf.DefaultOptions(), in.Input)
	b, err := json.Marshal(map[string]any{"object": "list", "model": "tiny",
		"data": []map[string]any{{"object": "embedding", "index": 0, "embedding": v}}})
	return &llm.Response{Body: b}, err
}

// Many clients read one entry at once, plain and streamed, in both
// formats: every answer is the cached one, whole (run under -race).
func TestCacheConcurrentHits(t *testing.T) {
	s := newCacheSurfaces(t, cacheTable(1, nil), nil)
	streamed := strings.Replace(chat0, `"model"`, `"stream":true,"model"`, 1)
	astreamed := strings.Replace(messages0, `"model"`, `"stream":true,"model"`, 1)
	expect(t, "plain", s.send(chatPath, keyA, chat0), "miss", "answer-1")
	expect(t, "stream", s.send(chatPath, keyA, streamed), "miss", "a2-3 ")
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				path, body, want := chatPath, chat0, "answer-1"
				switch (i + j) % 4 {
				case 1:
					body, want = streamed, "a2-3 "
				case 2:
					path, body, want = messagesPath, messages0, `"text":"answer-1"`
				case 3:
					path, body, want = messagesPath, astreamed, "a2-3 "
				}
				w := s.send(path, keyA, body)
				if w.code != 200 || w.h.Get(api.HeaderCache) != "hit" || !strings.Contains(w.body(), want) {
					errs <- fmt.Sprintf("%s %d %q: %s", path, w.code, w.h.Get(api.HeaderCache), w.body())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := s.calls.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2", n)
	}
}

// Batch work (api.WithBatch) is priced at the batch price where the
// table sets one, and at the normal price where it does not.
func TestBatchLinesPricedAtBatchPrice(t *testing.T) {
	for _, c := range []struct {
		name      string
		in, out   float64
		wantPrice table.Price
	}{
		{"batch price", 1.5, 7.5, table.Price{Input: 1.5, Output: 7.5}},
		{"input only", 1.5, 0, table.Price{Input: 1.5, Output: 15}},
		{"unset", 0, 0, table.Price{Input: 3, Output: 15}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, st := jsBus(t)
			uc := usage.DefaultConfig()
			uc.Node, uc.Dir = "edge-a", t.TempDir()
			rec, err := usage.New(uc)
			if err != nil {
				t.Fatal(err)
			}
			defer rec.Close()
			if err := rec.Start(nc); err != nil {
				t.Fatal(err)
			}
			s := newCacheSurfaces(t, cacheTable(1, func(t *table.Table) {
				t.Prices[0].BatchInput, t.Prices[0].BatchOutput = c.in, c.out
			}), func(c *api.Config) { c.Usage = rec })
			body := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"sampled, never cached"}]}`
			expect(t, "interactive", s.send(chatPath, keyA, body, api.HeaderRequestID, "interactive-1"), "bypass")
			r := httptest.NewRequest(http.MethodPost, chatPath, strings.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+keyA)
			r.Header.Set(api.HeaderRequestID, "batch-1")
			r = r.WithContext(gateway.WithClient(api.WithBatch(r.Context()), &gateway.Client{}))
			w := &pieceWriter{h: http.Header{}}
			s.mux.ServeHTTP(w, r)
			got := streamRecords(t, st, 2)
			if want := usagewire.CostNanoUSD(10, 20, table.Price{Input: 3, Output: 15}); got["interactive-1"].GetCostNanoUsd() != want {
				t.Errorf("interactive: cost %d, want %d", got["interactive-1"].GetCostNanoUsd(), want)
			}
			if want := usagewire.CostNanoUSD(10, 20, c.wantPrice); got["batch-1"].GetCostNanoUsd() != want || want == 0 {
				t.Errorf("batch line: cost %d, want %d (%v)", got["batch-1"].GetCostNanoUsd(), want, got)
			}
		})
	}
}
