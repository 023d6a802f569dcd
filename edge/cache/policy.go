package cache

import (
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Status is what x-meridian-cache says of an answer.
type Status string

// Statuses.
const (
	// Hit: the answer came from the cache.
	Hit Status = "hit"
	// Miss: the request could have been answered from the cache, was
	// not, and its answer may be stored.
	Miss Status = "miss"
	// Bypass: the cache was not consulted (policy, a sampled request,
	// the client's Cache-Control, a request that is not a chat).
	Bypass Status = "bypass"
)

// Policy is the cache policy that applies to one request: its route's
// combined with its tenant's.
type Policy struct {
	// Mode is table.CacheAuto, CacheForce or CacheOff.
	Mode string
	// TTL is how long an answer is served; zero means the store's
	// default.
	TTL time.Duration
	// Similarity is the semantic cache's threshold; zero turns it off.
	Similarity float64
}

// Combine returns the policy for a request on route for tenant; either
// may be nil. "off" on either side wins; otherwise each field is the
// route's when set, else the tenant's.
func Combine(route, tenant *table.CachePolicy) Policy {
	var r, t table.CachePolicy
	if route != nil {
		r = *route
	}
	if tenant != nil {
		t = *tenant
	}
	p := Policy{Mode: r.Mode, TTL: r.TTL, Similarity: r.Similarity}
	if p.Mode == table.CacheAuto {
		p.Mode = t.Mode
	}
	if r.Mode == table.CacheOff || t.Mode == table.CacheOff {
		p.Mode = table.CacheOff
	}
	if p.TTL == 0 {
		p.TTL = t.TTL
	}
	if p.Similarity == 0 {
		p.Similarity = t.Similarity
	}
	return p
}

// Decision is what the cache may do for one request.
type Decision struct {
	// Read: an answer may come from the cache.
	Read bool
	// Write: the request's answer may be stored.
	Write bool
	// Reason says why the cache is bypassed, for the dry run; empty
	// when it is consulted.
	Reason string
}

// Status is the x-meridian-cache value of a request the cache did not
// answer.
func (d Decision) Status() Status {
	if d.Read {
		return Miss
	}
	return Bypass
}

// Decide says what the cache may do for req under p, given the
// client's Cache-Control header. Only chat completions are cached, and
// by default only deterministic ones (temperature 0, or a seed): a
// sampled answer served twice is not what the client asked for.
// "no-store" forbids reading and storing; "no-cache" forbids reading,
// and the fresh answer is stored (as an HTTP cache would revalidate).
func Decide(req *llm.Request, p Policy, cacheControl string) Decision {
	switch {
	case req.Op != llm.OpChat:
		return Decision{Reason: "only chat completions are cached"}
	case p.Mode == table.CacheOff:
		return Decision{Reason: "the route's or the tenant's cache policy is off"}
	}
	cc := ParseCacheControl(cacheControl)
	if cc.NoStore {
		return Decision{Reason: "the client sent Cache-Control: no-store"}
	}
	if p.Mode != table.CacheForce {
		c, err := req.ChatRequest()
		if err != nil {
			return Decision{Reason: "the request does not decode as a chat"}
		}
		if !deterministic(c) {
			return Decision{Reason: "the request samples (set temperature 0 or a seed, or a force policy, to cache it)"}
		}
	}
	if cc.NoCache {
		return Decision{Write: true, Reason: "the client sent Cache-Control: no-cache"}
	}
	return Decision{Read: true, Write: true}
}

func deterministic(c *llm.ChatRequest) bool {
	return c.Seed != nil || (c.Temperature != nil && *c.Temperature == 0)
}

// CacheControl is what a request's Cache-Control header asks of the
// cache.
type CacheControl struct {
	NoCache, NoStore bool
}

// maxCacheControl bounds the header read: directives past it are
// ignored, so a hostile header costs nothing.
const maxCacheControl = 1024

// ParseCacheControl reads the directives of a Cache-Control header
// (RFC 9111 §5.2): comma-separated, case-insensitive tokens, each
// perhaps with "=value". Unknown directives and malformed pieces are
// ignored, as the RFC asks. "no-cache" with a field list (no-cache="x")
// still counts as no-cache: a client that says it wants a fresh answer
// gets one.
func ParseCacheControl(h string) CacheControl {
	if len(h) > maxCacheControl {
		h = h[:maxCacheControl]
	}
	var cc CacheControl
	for h != "" {
		var d string
		d, h, _ = strings.Cut(h, ",")
		name, _, _ := strings.Cut(d, "=")
		name = strings.TrimSpace(name)
		switch {
		case strings.EqualFold(name, "no-cache"):
			cc.NoCache = true
		case strings.EqualFold(name, "no-store"):
			cc.NoStore = true
		}
	}
	return cc
}

// Allowed reports whether region is in every list of lists that is
// not empty: the regions a tenant, a key, a route and a model allow.
// An empty region (unknown) is allowed only where nothing restricts.
func Allowed(region string, lists ...[]string) bool {
	for _, l := range lists {
		if len(l) == 0 {
			continue
		}
		found := false
		for _, r := range l {
			if r == region && region != "" {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
