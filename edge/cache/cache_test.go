package cache_test

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

func openaiReq(t testing.TB, body string) *llm.Request {
	t.Helper()
	r, e := openai.DecodeChat([]byte(body))
	if e != nil {
		t.Fatalf("decode %s: %v", body, e)
	}
	return r
}

func anthropicReq(t testing.TB, body string) *llm.Request {
	t.Helper()
	r, e := anthropic.DecodeMessages([]byte(body))
	if e != nil {
		t.Fatalf("decode %s: %v", body, e)
	}
	r.Native, r.NativeFormat = []byte(body), llm.FormatAnthropic
	return r
}

func key(t testing.TB, tenant string, r *llm.Request) cache.Key {
	t.Helper()
	k, err := cache.KeyOf(tenant, r)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyOf(t *testing.T) {
	const base = `{"model":"m","temperature":0,"max_tokens":16,"stop":"END","messages":[{"role":"system","content":"sys"},{"role":"user","content":"hello"}],
		"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}]}`
	k := key(t, "acme", openaiReq(t, base))
	same := map[string]*llm.Request{
		"whitespace":     openaiReq(t, strings.ReplaceAll(base, `":`, `": `)),
		"content parts":  openaiReq(t, strings.Replace(base, `"content":"hello"`, `"content":[{"type":"text","text":"hello"}]`, 1)),
		"stop list":      openaiReq(t, strings.Replace(base, `"stop":"END"`, `"stop":["END"]`, 1)),
		"max_completion": openaiReq(t, strings.Replace(base, `"max_tokens"`, `"max_completion_tokens"`, 1)),
		"user":           openaiReq(t, strings.Replace(base, `"model"`, `"user":"u1","model"`, 1)),
		"anthropic": anthropicReq(t, `{"model":"m","temperature":0,"max_tokens":16,"stop_sequences":["END"],"system":"sys","metadata":{"user_id":"x"},
			"messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],
			"tools":[{"name":"f","description":"d","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}}]}`),
	}
	for name, r := range same {
		if got := key(t, "acme", r); got != k {
			t.Errorf("%s: a different key for the same request", name)
		}
	}
	differ := map[string]string{
		"message":        strings.Replace(base, "hello", "hello!", 1),
		"system":         strings.Replace(base, `"sys"`, `"sys2"`, 1),
		"temperature":    strings.Replace(base, `"temperature":0`, `"temperature":0.1`, 1),
		"max tokens":     strings.Replace(base, `"max_tokens":16`, `"max_tokens":17`, 1),
		"seed":           strings.Replace(base, `"model"`, `"seed":1,"model"`, 1),
		"stop":           strings.Replace(base, `"stop":"END"`, `"stop":"FIN"`, 1),
		"tool schema":    strings.Replace(base, `"a":{"type":"string"}`, `"a":{"type":"number"}`, 1),
		"tool choice":    strings.Replace(base, `"model"`, `"tool_choice":"required","model"`, 1),
		"response fmt":   strings.Replace(base, `"model"`, `"response_format":{"type":"json_object"},"model"`, 1),
		"unknown field":  strings.Replace(base, `"model"`, `"presence_penalty":0.5,"model"`, 1),
		"stream":         strings.Replace(base, `"model"`, `"stream":true,"model"`, 1),
		"model":          strings.Replace(base, `"model":"m"`, `"model":"m2"`, 1),
		"role":           strings.Replace(base, `"role":"system"`, `"role":"developer"`, 1),
		"split messages": strings.Replace(base, `{"role":"user","content":"hello"}`, `{"role":"user","content":"hel"},{"role":"user","content":"lo"}`, 1),
	}
	for name, body := range differ {
		if got := key(t, "acme", openaiReq(t, body)); got == k {
			t.Errorf("%s: the same key for a different request", name)
		}
	}
	if key(t, "other", openaiReq(t, base)) == k {
		t.Error("two tenants share a key")
	}
	if _, err := cache.KeyOf("acme", &llm.Request{Op: llm.OpEmbedding, Model: "m"}); err == nil {
		t.Error("an embedding request got a key")
	}
}

func TestCombineAndDecide(t *testing.T) {
	force, off := &table.CachePolicy{Mode: table.CacheForce, TTL: time.Minute}, &table.CachePolicy{Mode: table.CacheOff}
	for _, c := range []struct {
		name          string
		route, tenant *table.CachePolicy
		want          cache.Policy
	}{
		{"none", nil, nil, cache.Policy{}},
		{"route", force, nil, cache.Policy{Mode: table.CacheForce, TTL: time.Minute}},
		{"tenant fills in", &table.CachePolicy{Similarity: 0.9}, force, cache.Policy{Mode: table.CacheForce, TTL: time.Minute, Similarity: 0.9}},
		{"route ttl wins", &table.CachePolicy{TTL: time.Second}, force, cache.Policy{Mode: table.CacheForce, TTL: time.Second}},
		{"tenant off wins", force, off, cache.Policy{Mode: table.CacheOff, TTL: time.Minute}},
		{"route off wins", off, force, cache.Policy{Mode: table.CacheOff, TTL: time.Minute}},
	} {
		if got := cache.Combine(c.route, c.tenant); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	det := openaiReq(t, `{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}]}`)
	seeded := openaiReq(t, `{"model":"m","seed":3,"messages":[{"role":"user","content":"x"}]}`)
	sampled := openaiReq(t, `{"model":"m","messages":[{"role":"user","content":"x"}]}`)
	for _, c := range []struct {
		name        string
		req         *llm.Request
		mode, cc    string
		read, write bool
	}{
		{"deterministic", det, "", "", true, true},
		{"seeded", seeded, "", "", true, true},
		{"sampled", sampled, "", "", false, false},
		{"sampled, forced", sampled, table.CacheForce, "", true, true},
		{"off", det, table.CacheOff, "", false, false},
		{"no-cache", det, "", "no-cache", false, true},
		{"no-store", det, "", "private, NO-STORE", false, false},
		{"no-store forced", sampled, table.CacheForce, "no-store", false, false},
	} {
		d := cache.Decide(c.req, cache.Policy{Mode: c.mode}, c.cc)
		if d.Read != c.read || d.Write != c.write || (!d.Read && d.Reason == "") {
			t.Errorf("%s: %+v", c.name, d)
		}
	}
}

func TestParseCacheControl(t *testing.T) {
	for h, want := range map[string]cache.CacheControl{
		"":                                     {},
		"no-cache":                             {NoCache: true},
		"No-Store":                             {NoStore: true},
		" max-age=0 , no-cache,no-store":       {NoCache: true, NoStore: true},
		`no-cache="set-cookie, x"`:             {NoCache: true},
		"no-cachex, xno-store":                 {},
		"max-age=no-store":                     {},
		strings.Repeat(",", 2000) + "no-store": {},
	} {
		if got := cache.ParseCacheControl(h); got != want {
			t.Errorf("%q: %+v, want %+v", h, got, want)
		}
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"no-cache", "no-store, max-age=0", `no-cache="a,b"`, "", ",,,", "NO-CACHE"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cc := cache.ParseCacheControl(h)
		// Whatever the header, a directive is found only where its
		// name stands.
		if cc.NoStore && !strings.Contains(strings.ToLower(h), "no-store") {
			t.Fatalf("no-store from %q", h)
		}
		if cc.NoCache && !strings.Contains(strings.ToLower(h), "no-cache") {
			t.Fatalf("no-cache from %q", h)
		}
	})
}

// FuzzKeyOf feeds request bodies through the OpenAI decoder to KeyOf:
// it never panics, and a body has one key, the same every time.
func FuzzKeyOf(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"m","stop":["a","b"],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"data:,"}}]}],"x":{"y":[1,2]}}`,
		`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r, e := openai.DecodeChat([]byte(body))
		if e != nil {
			return
		}
		k1, err1 := cache.KeyOf("t", r)
		r2, _ := openai.DecodeChat([]byte(body))
		k2, err2 := cache.KeyOf("t", r2)
		if (err1 == nil) != (err2 == nil) || k1 != k2 {
			t.Fatalf("two keys for one body: %v %v", err1, err2)
		}
		// The fields the decoder kept aside hash as reading the body
		// for them did.
		c := *r2.Chat
		c.Extra, c.HasExtra = nil, false
		r2.Chat = &c
		if k3, err3 := cache.KeyOf("t", r2); (err1 == nil) != (err3 == nil) || k1 != k3 {
			t.Fatalf("the decoder's extra fields and the body's hash apart: %v %v", err1, err3)
		}
	})
}

// TestKeyOfReadsBodyOnce: the key of an OpenAI request comes from what
// the surface decoded, the unread top-level fields included; the body
// is not read again. It is swapped for bytes that are not JSON after
// the decode, and the key must not change.
func TestKeyOfReadsBodyOnce(t *testing.T) {
	const body = `{"model":"m","presence_penalty":0.5,"messages":[{"role":"user","content":"hello"}],"x_vendor":{"b":1, "a":[2]},"seed":3}`
	r := openaiReq(t, body)
	k := key(t, "acme", r)
	r.Body = []byte(`{"model":"m","presence_penalty":0.9,"messages":[`)
	if key(t, "acme", r) != k {
		t.Fatal("the cache key read the body again")
	}
	if len(r.Chat.Extra) != 2 || r.Chat.Extra[0].Name != "presence_penalty" || r.Chat.Extra[1].Name != "x_vendor" {
		t.Fatalf("extra fields = %+v", r.Chat.Extra)
	}
	reordered := openaiReq(t, `{"x_vendor":{"b":1,"a":[2]},"model":"m","messages":[{"role":"user","content":"hello"}],"seed":3,"presence_penalty":0.5}`)
	if key(t, "acme", reordered) != k {
		t.Fatal("the order of unread fields changed the key")
	}

	// The same for an Anthropic body, and the fields its decoder kept
	// hash as reading the body for them does.
	const abody = `{"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"hello"}],"service_tier":null}`
	ar := anthropicReq(t, abody)
	ak := key(t, "acme", ar)
	if len(ar.Chat.Extra) != 2 {
		t.Fatalf("anthropic extra fields = %+v", ar.Chat.Extra)
	}
	c := *ar.Chat
	c.Extra, c.HasExtra = nil, false
	fallback := *ar
	fallback.Chat = &c
	if key(t, "acme", &fallback) != ak {
		t.Fatal("the Anthropic decoder's extra fields and its body's hash apart")
	}
	ar.Native = []byte(`{"model":"m","thinking":{"type":"disabled"}`)
	if key(t, "acme", ar) != ak {
		t.Fatal("the cache key read the Anthropic body again")
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T, maxBytes int64) (*cache.Store, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	cfg := cache.DefaultConfig()
	cfg.MaxBytes, cfg.Now = maxBytes, clk.Now
	s, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, clk
}

func TestStoreTenantAndTTL(t *testing.T) {
	s, clk := newStore(t, 1<<20)
	k := cache.Key{1}
	s.Put(k, &cache.Entry{Tenant: "a", Model: "m", Body: []byte("{}")}, 10*time.Second)
	if _, ok := s.Get(k, "b"); ok {
		t.Fatal("tenant b got tenant a's entry")
	}
	if _, ok := s.Get(k, "a"); !ok {
		t.Fatal("tenant a missed its own entry")
	}
	clk.advance(10 * time.Second)
	if _, ok := s.Get(k, "a"); ok {
		t.Fatal("an expired entry was served")
	}
	if st := s.Stats(); st.Hits != 1 || st.Misses != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStoreByteCap(t *testing.T) {
	const cap = 64 << 10
	s, _ := newStore(t, cap)
	body := []byte(strings.Repeat("x", 1000))
	for i := range 1000 {
		s.Put(cache.Key{byte(i), byte(i >> 8)}, &cache.Entry{Tenant: "a", Body: body}, time.Minute)
	}
	s.CleanUp()
	st := s.Stats()
	if st.Bytes > cap || st.Entries == 0 || st.Entries > cap/1000 {
		t.Fatalf("after 1000 entries of ~1.5 KB under a %d-byte cap: %+v", cap, st)
	}
	// An answer bigger than MaxEntryBytes (cap/16 by default) is not kept.
	if s.Put(cache.Key{9, 9, 9}, &cache.Entry{Tenant: "a", Body: make([]byte, cap/16)}, time.Minute) {
		t.Fatal("an oversized answer was stored")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []cache.Config{{}, {MaxBytes: 1, DefaultTTL: -1}, {MaxBytes: 10, MaxEntryBytes: 11, DefaultTTL: time.Second}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validated", c)
		}
	}
	def := cache.DefaultConfig()
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
}

// chunks is a stream of raw chunks in bursts, then a usage chunk.
type chunks struct {
	raw    []string
	ends   map[int]bool
	i      int
	c      llm.Chunk
	cut    bool
	usage  bool
	u      llm.Usage
	closed bool
}

func (s *chunks) Next() (*llm.Chunk, error) {
	switch {
	case s.i < len(s.raw):
		s.c.SetRaw([]byte(s.raw[s.i]))
		s.i++
		return &s.c, nil
	case s.cut:
		return nil, llm.ErrStreamCut
	case s.usage:
		s.usage = false
		s.c.SetRaw([]byte(`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`))
		s.u = llm.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}
		return &s.c, nil
	}
	return nil, io.EOF
}
func (s *chunks) Buffered() int {
	if s.i > 0 && s.i <= len(s.raw) && !s.ends[s.i-1] {
		return 1
	}
	return 0
}
func (s *chunks) Usage() (llm.Usage, bool) { return s.u, s.u != (llm.Usage{}) }
func (s *chunks) Close() error             { s.closed = true; return nil }

func TestRecordAndReplay(t *testing.T) {
	raw := make([]string, 5)
	for i := range raw {
		raw[i] = fmt.Sprintf(`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"c%d"}}]}`, i)
	}
	ends := map[int]bool{1: true, 2: true, 4: true}
	var got *cache.Entry
	st := cache.Record(&chunks{raw: raw, ends: ends, usage: true}, 1<<20, func(r *cache.Recording) {
		got = &cache.Entry{Chunks: r.Chunks, Ends: r.Ends, Usage: r.Usage, Stream: true}
	})
	var bursts []bool
	for {
		_, err := st.Next()
		if err != nil {
			break
		}
		bursts = append(bursts, st.(llm.Buffered).Buffered() == 0)
	}
	st.Close()
	if got == nil || len(got.Chunks) != 5 || got.Usage.PromptTokens != 3 {
		t.Fatalf("recorded %+v", got)
	}
	// The replay gives the same chunks in the same bursts, then usage.
	rp := cache.Replay(got)
	for i := range raw {
		c, err := rp.Next()
		if err != nil || string(c.Raw) != raw[i] {
			t.Fatalf("chunk %d: %v %s", i, err, c.Raw)
		}
		if end := rp.(llm.Buffered).Buffered() == 0; end != bursts[i] || end != ends[i] {
			t.Fatalf("chunk %d: burst end %v, recorded %v, original %v", i, end, bursts[i], ends[i])
		}
	}
	c, err := rp.Next()
	if err != nil || len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 4 || c.ID != "x" || c.Model != "m" {
		t.Fatalf("usage chunk: %v %+v", err, c)
	}
	if _, err := rp.Next(); err != io.EOF {
		t.Fatalf("after usage: %v", err)
	}

	// A stream that breaks, or outgrows the limit, is not handed over.
	for name, s := range map[string]llm.Stream{
		"cut":     cache.Record(&chunks{raw: raw, cut: true}, 1<<20, func(*cache.Recording) { t.Error("a cut stream was recorded") }),
		"too big": cache.Record(&chunks{raw: raw}, 100, func(*cache.Recording) { t.Error("an oversized stream was recorded") }),
	} {
		for {
			if _, err := s.Next(); err != nil {
				break
			}
		}
		s.Close()
		_ = name
	}
}

func TestAllowed(t *testing.T) {
	for _, c := range []struct {
		region string
		lists  [][]string
		want   bool
	}{
		{"eu", nil, true},
		{"", [][]string{nil, {}}, true},
		{"eu", [][]string{{"eu", "us"}, nil, {"eu"}}, true},
		{"us", [][]string{{"eu", "us"}, {"eu"}}, false},
		{"", [][]string{{"eu"}}, false},
	} {
		if got := cache.Allowed(c.region, c.lists...); got != c.want {
			t.Errorf("Allowed(%q, %v) = %v", c.region, c.lists, got)
		}
	}
}
