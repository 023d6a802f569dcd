package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// HeaderCache says whether the answer came from the edge's cache: hit,
// miss (it could have, and its answer may now be stored) or bypass.
// HeaderCacheSimilarity is set on a semantic hit: the cosine similarity
// of the request's last user turn to the cached one's.
const (
	HeaderCache           = "X-Meridian-Cache"
	HeaderCacheSimilarity = "X-Meridian-Cache-Similarity"
)

// CacheFormat is implemented by formats whose answers the edge cache
// may serve: they render a cached answer with its usage marked as read
// from the cache (OpenAI's prompt_tokens_details.cached_tokens,
// Anthropic's cache_read_input_tokens). A format without it is never
// served from the cache.
type CacheFormat interface {
	// EncodeCached renders a cached plain answer, resp.Body being an
	// OpenAI chat completion, or the format's own answer when
	// resp.Format names it (an upstream answered natively).
	EncodeCached(req *llm.Request, resp *llm.Response) (body []byte, usage llm.Usage, err error)
	// StreamCached returns the encoder for a replayed stream; its last
	// chunk carries the usage (cache.Replay).
	StreamCached(r *http.Request, req *llm.Request, res *gateway.Result) StreamEncoder
}

// cacheStep is what the cache decided for one request.
type cacheStep struct {
	status cache.Status
	key    cache.Key
	policy cache.Policy
	// write: the answer may be stored under key.
	write bool
	// hit is the entry that answered the request.
	hit *cache.Entry
	// reason says why the cache was bypassed.
	reason string
	// The semantic cache: the request's context key and its last user
	// turn's embedding, to index the answer under once it is stored,
	// and a semantic hit's similarity.
	semantic   bool
	semCtx     cache.Key
	vec        []float32
	similarity float64
}

// regionLists are the residency lists that apply to a request for model
// by id: the route's, the model's, the tenant's and the key's.
func regionLists(tab *table.Compiled, model string, id *Identity) [4][]string {
	var l [4][]string
	if r, ok := tab.Route(model); ok {
		l[0] = r.AllowedRegions
	}
	if m, ok := tab.Model(model); ok {
		l[1] = m.AllowedRegions
	}
	if id.Tenant != nil {
		l[2] = id.Tenant.AllowedRegions
	}
	if id.Key != nil {
		l[3] = id.Key.AllowedRegions
	}
	return l
}

// checkCache decides what the cache may do for req and looks it up.
// Answers are stored only on an edge inside the regions the request
// allows (the cache holds them at rest here), and served only from
// entries produced inside them.
//
// On an exact miss, when the policy sets a similarity and the edge has a
// semantic index, the last user turn is embedded (SemanticModel, through
// the gateway, so residency applies to it as to any request) and
// compared with the turns cached in the same context. A dry run (peek)
// skips that step: it would send the text to the embedding model.
func (c *Config) checkCache(ctx context.Context, snap gateway.Snapshot, id *Identity, req *llm.Request, f Format, cacheControl string, peek bool) cacheStep {
	tab := snap.Table()
	st := cacheStep{status: cache.Bypass}
	if c.Cache == nil {
		st.reason = "this edge has no cache"
		return st
	}
	if _, ok := f.(CacheFormat); f != nil && !ok {
		st.reason = "this client format is not served from the cache"
		return st
	}
	var rp, tp *table.CachePolicy
	if r, ok := tab.Route(req.Model); ok {
		rp = &r.Cache
	}
	if id.Tenant != nil {
		tp = &id.Tenant.Cache
	}
	st.policy = cache.Combine(rp, tp)
	d := cache.Decide(req, st.policy, cacheControl)
	if !d.Read && !d.Write {
		st.reason = d.Reason
		return st
	}
	lists := regionLists(tab, req.Model, id)
	if !cache.Allowed(c.Region, lists[:]...) {
		st.reason = "this edge's region is outside the regions the request allows"
		return st
	}
	k, err := cache.KeyOf(id.TenantID, req)
	if err != nil {
		st.reason = "the request has no cache key: " + err.Error()
		return st
	}
	st.key, st.write, st.status, st.reason = k, d.Write, d.Status(), d.Reason
	if !d.Read {
		return st
	}
	get := c.Cache.Get
	if peek {
		get = c.Cache.Peek
	}
	if e, ok := get(k, id.TenantID); ok && servable(e, req) && cache.Allowed(e.Region, lists[:]...) {
		st.status, st.hit = cache.Hit, e
		return st
	}
	if c.Semantic == nil || c.SemanticModel == "" || st.policy.Similarity <= 0 || peek {
		return st
	}
	semCtx, text, err := cache.ContextKeyOf(id.TenantID, req)
	if err != nil {
		return st
	}
	vec, err := c.embed(ctx, snap, text)
	if err != nil {
		c.logger().Warn("cache: the semantic lookup could not embed the request", "request_id", req.ID, "model", c.SemanticModel, "error", err.Error())
		return st
	}
	st.semantic, st.semCtx, st.vec = true, semCtx, vec
	k2, sim, ok := c.Semantic.Search(semCtx, vec)
	if !ok || sim < st.policy.Similarity {
		return st
	}
	if e, ok := c.Cache.Get(k2, id.TenantID); ok && servable(e, req) && cache.Allowed(e.Region, lists[:]...) {
		st.status, st.hit, st.similarity = cache.Hit, e, sim
	}
	return st
}

// servable reports whether e can answer req: the same model and kind of
// answer, in a format the client reads (OpenAI's shape renders to
// either; a native answer only to its own format's clients).
func servable(e *cache.Entry, req *llm.Request) bool {
	return e.Model == req.Model && e.Stream == req.Stream && (e.Format == "" || e.Format == req.NativeFormat)
}

// embed returns the unit embedding of text by SemanticModel.
func (c *Config) embed(ctx context.Context, snap gateway.Snapshot, text string) ([]float32, error) {
	body, err := json.Marshal(struct {
		Model string `json:"model"`
		Input string `json:"input"`
	}{c.SemanticModel, text})
	if err != nil {
		return nil, err
	}
	res, err := c.Gateway.DoIn(ctx, snap, &llm.Request{Op: llm.OpEmbedding, Model: c.SemanticModel, Body: body})
	if err != nil {
		return nil, err
	}
	var out struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(res.Response.Body, &out); err != nil {
		return nil, fmt.Errorf("embedding answer: %w", err)
	}
	if len(out.Data) != 1 {
		return nil, fmt.Errorf("embedding answer: %d vectors for one input", len(out.Data))
	}
	v := out.Data[0].Embedding
	if err := cache.Normalize(v); err != nil {
		return nil, err
	}
	return v, nil
}

// put stores e, and indexes it for the semantic cache when the lookup
// embedded the request.
func (x *exchange) put(e *cache.Entry) {
	st, step := x.c.Cache, &x.cache
	if !st.Put(step.key, e, step.policy.TTL) {
		return
	}
	if step.semantic {
		x.c.Semantic.Add(step.semCtx, step.vec, step.key)
	}
}

// servedRegion is the region of the target that produced an answer.
func (c *Config) servedRegion(tab *table.Compiled, r *gateway.Route) string {
	switch r.Kind {
	case "local":
		return c.Region
	case "provider":
		if p, ok := tab.Provider(r.Provider); ok {
			return p.Region
		}
	case "peer":
		if n, ok := tab.Node(r.Provider); ok {
			return n.Region
		}
	}
	return ""
}

// newEntry is the entry for an answer res gave req.
func (x *exchange) newEntry(tab *table.Compiled, req *llm.Request, res *gateway.Result) *cache.Entry {
	r := &res.Route
	return &cache.Entry{Tenant: x.id.TenantID, Model: req.Model, Region: x.c.servedRegion(tab, r),
		Target: r.Target, Kind: r.Kind, Provider: r.Provider, UpstreamModel: r.UpstreamModel, Stream: req.Stream}
}

// storePlain keeps a plain answer, in OpenAI's shape.
func (x *exchange) storePlain(tab *table.Compiled, req *llm.Request, res *gateway.Result, u llm.Usage) {
	resp := res.Response
	format := resp.Format
	if format == llm.FormatOpenAI {
		format = ""
	}
	body := resp.Body
	if body == nil {
		if resp.Completion == nil {
			return
		}
		var err error
		if body, err = json.Marshal(resp.Completion); err != nil {
			return
		}
	}
	if u == (llm.Usage{}) && format == "" {
		if cc, err := resp.ChatCompletion(); err == nil && cc.Usage != nil {
			u = *cc.Usage
		}
	}
	e := x.newEntry(tab, req, res)
	e.Body, e.Usage, e.Format = body, u, format
	x.put(e)
}

// recordStream wraps a stream so that, once it ends cleanly, its
// chunks are stored.
func (x *exchange) recordStream(tab *table.Compiled, req *llm.Request, res *gateway.Result) {
	e := x.newEntry(tab, req, res)
	res.Response.Stream = cache.Record(res.Response.Stream, x.c.Cache.MaxEntryBytes(), func(r *cache.Recording) {
		e.Chunks, e.Ends, e.Events = r.Chunks, r.Ends, r.Events
		if r.HasUsage {
			e.Usage = r.Usage
		}
		if r.Events != nil {
			e.Format = res.Response.Format
		}
		x.put(e)
	})
}

// serveHit answers from the cache entry e.
func (x *exchange) serveHit(req *llm.Request, e *cache.Entry) {
	w := x.w
	res := &gateway.Result{Route: gateway.Route{Target: "cache", Kind: "cache", Strategy: "cache",
		UpstreamModel: e.UpstreamModel, Reason: "cached-from-" + e.Target}}
	x.res = res
	x.o.Target, x.o.Kind = res.Route.Target, res.Route.Kind
	w.Header().Set(HeaderRoute, res.Route.Header())
	if x.cache.similarity > 0 {
		w.Header().Set(HeaderCacheSimilarity, strconv.FormatFloat(x.cache.similarity, 'f', 4, 64))
	}
	if e.Stream {
		res.Response = &llm.Response{Stream: cache.Replay(e), Format: e.Format}
		x.streamed = true
		x.stream(req, res)
		return
	}
	res.Response = &llm.Response{Body: e.Body, Usage: e.Usage, Format: e.Format}
	out, usage, err := x.f.(CacheFormat).EncodeCached(req, res.Response)
	if err != nil {
		x.fail(llm.AsError(err))
		return
	}
	x.o.Overhead = time.Since(x.start)
	x.o.Usage, x.o.HasUsage = usage, true
	x.o.Status = "200"
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderOverhead, Micros(x.o.Overhead))
	x.wrote = true
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// CacheExplanation is the dry run's account of the cache for one
// request.
type CacheExplanation struct {
	// Status is what x-meridian-cache would say: hit, miss or bypass.
	Status string `json:"status"`
	// Reason says why the cache would be bypassed, or not read.
	Reason string `json:"reason,omitempty"`
	// Key is the request's cache key, hex.
	Key string `json:"key,omitempty"`
	// Region is where a hit's answer was produced, and ExpiresAt when
	// it stops being served.
	Region    string `json:"region,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
	TTL       string `json:"ttl,omitempty"`
}

// ExplainCache says whether req, sent with key keyID (empty: no key)
// and the given Cache-Control header, would be answered from the cache
// now, in either client format. It counts nothing and stores nothing.
func (c *Config) ExplainCache(snap gateway.Snapshot, keyID string, req *llm.Request, cacheControl string) *CacheExplanation {
	tab := snap.Table()
	var id Identity
	if keyID != "" {
		for _, k := range tab.Table().Keys {
			if k.ID == keyID {
				id = Identity{KeyID: k.ID, TenantID: k.Tenant, Key: k}
				id.Tenant, _ = tab.Tenant(k.Tenant)
			}
		}
	}
	st := c.checkCache(context.Background(), snap, &id, req, nil, cacheControl, true)
	ex := &CacheExplanation{Status: string(st.status), Reason: st.reason}
	if st.status != cache.Bypass {
		ex.Key = st.key.String()
		ttl := st.policy.TTL
		if ttl == 0 {
			ttl = c.Cache.DefaultTTL()
		}
		ex.TTL = ttl.String()
	}
	if e := st.hit; e != nil {
		ex.Region, ex.ExpiresAt = e.Region, e.Expires.UTC().Format(time.RFC3339)
	}
	return ex
}
