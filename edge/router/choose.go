package router

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/geo"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Needs are what a request asks of a model beyond text.
type Needs uint8

// Request needs.
const (
	NeedTools Needs = 1 << iota
	NeedVision
	NeedJSON
)

// Request is what the router knows of one request.
type Request struct {
	// Model is the model the client asked for.
	Model string
	// Client is where the client is; HasClient false means unknown, and
	// the node's own region stands in.
	Client    Point
	HasClient bool
	// Tenant is the tenant of the client's key, "" when none.
	Tenant string
	// Needs are the capabilities the request needs; NeedsKnown is false
	// when they were not worked out (the caller then calls NeedsFunc).
	Needs Needs
	// PromptTokens and MaxTokens are estimates, for context length and
	// price; zero means unknown.
	PromptTokens, MaxTokens int
	// Forwarded marks a request a peer routed here: it never hops to
	// another peer (no request goes round the mesh).
	Forwarded bool
	// AllowedRegions is a residency list the request carries, from the
	// edge that routed it first; it applies with the route's, the
	// model's and the tenant's.
	AllowedRegions []string
	// KeyRegions are the client key's allowed regions, which apply on
	// top of its tenant's; empty means anywhere.
	KeyRegions []string
}

// Exclusion reasons, as the dry run and x-meridian-route print them.
const (
	ReasonResidency  = "residency"
	ReasonPrice      = "price"
	ReasonCapability = "capability"
	ReasonContext    = "context-length"
	ReasonBreaker    = "breaker-open"
	ReasonLinkDown   = "link-down"
	ReasonNoLinks    = "no-links"
	ReasonNotReady   = "not-ready"
	ReasonNotPlaced  = "not-placed"
	ReasonDead       = "dead"
	ReasonSuspect    = "suspect" // another edge's link declared it dead
	ReasonDraining   = "draining"
	ReasonUnknown    = "no-gossip" // a placed peer gossip has never seen
	ReasonForwarded  = "forwarded" // a forwarded request never hops again
)

// Choice is one candidate in a plan.
type Choice struct {
	Kind Kind   `json:"kind"`
	Key  string `json:"target"`
	// ID is the provider's or peer node's ID; empty for local.
	ID            string `json:"id,omitempty"`
	UpstreamModel string `json:"upstream_model"`
	Region        string `json:"region,omitempty"`
	// Addr is a peer's link address.
	Addr string `json:"addr,omitempty"`
	// Score is what the strategy ordered by (lower first): km for
	// nearest, ms for fastest, USD for cheapest, requests for
	// least-busy, position otherwise.
	Score float64 `json:"score"`
	// Breaker is the target's breaker state.
	Breaker string `json:"breaker,omitempty"`
	// Reason says why an excluded candidate was left out.
	Reason string `json:"reason,omitempty"`
	// Force marks a plan's last resort: every candidate's breaker was
	// open, so they are tried anyway rather than none.
	Force bool `json:"force,omitempty"`
	// Leaving marks a copy of the model on a node the table no longer
	// places it on, which still has it ready: a placement moved, and the
	// new copy is not ready yet. It is a target only while no placed
	// copy is.
	Leaving bool `json:"leaving,omitempty"`

	stats   *Stats
	tie     float64
	written int
}

// Stats returns the target's health record.
func (c *Choice) Stats() *Stats { return c.stats }

// Refusal is why a plan holds no target: a policy, a capability or an
// unknown model. Its Status is what the client gets.
type Refusal struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Param   string `json:"param,omitempty"`
	Message string `json:"message"`
}

// Plan is the router's answer for one request. Plans are reused: Reset
// keeps their slices.
type Plan struct {
	Model         string   `json:"model"`
	TableRevision uint64   `json:"table_revision"`
	Strategy      string   `json:"strategy"`
	Targets       []Choice `json:"targets"`
	Excluded      []Choice `json:"excluded"`
	Refusal       *Refusal `json:"refusal,omitempty"`
	// AllowedRegions is the residency constraint applied, when any.
	AllowedRegions []string `json:"allowed_regions,omitempty"`

	refusal Refusal
	allowed [5][]string
}

// Allowed is the intersection of the residency lists that applied: nil
// when none did. It allocates, so Choose leaves it to explanations.
func (p *Plan) Allowed() []string {
	if len(p.allowed[0]) == 0 && len(p.allowed[1]) == 0 && len(p.allowed[2]) == 0 && len(p.allowed[3]) == 0 && len(p.allowed[4]) == 0 {
		return nil
	}
	return intersect(&p.allowed)
}

// Reset empties p for reuse.
func (p *Plan) Reset() {
	p.Model, p.TableRevision, p.Strategy, p.Refusal = "", 0, "", nil
	p.Targets, p.Excluded, p.AllowedRegions = p.Targets[:0], p.Excluded[:0], nil
	p.allowed = [5][]string{}
}

// ModelView is what a caller needs to know of a model before asking for
// a plan: whether the request's needs must be worked out.
func (r *Router) NeedsCapabilities(model string) bool {
	return r.Snapshot().NeedsCapabilities(model)
}

// NeedsCapabilities is Router.NeedsCapabilities in this view.
func (v View) NeedsCapabilities(model string) bool {
	mv, _ := v.v.models.Get(model)
	return mv != nil && mv.caps
}

// Choose fills p with the plan for req. It never blocks and, once p's
// slices have grown, allocates nothing.
func (r *Router) Choose(req *Request, p *Plan) {
	r.ChooseIn(r.Snapshot(), req, p)
}

// ChooseIn is Choose in a view taken earlier (Snapshot), so that every
// decision about one request reads one table.
func (r *Router) ChooseIn(sv View, req *Request, p *Plan) {
	v := sv.v
	p.Reset()
	p.Model, p.TableRevision = req.Model, v.tab.Revision()
	mv, _ := v.models.Get(req.Model)
	if mv == nil {
		p.refuse(http.StatusNotFound, "model_not_found", "model", "")
		return
	}
	p.Strategy = mv.route.Strategy
	if p.Strategy == "" {
		p.Strategy = table.StrategyOrdered
	}
	// Residency: every list that is set must allow the region.
	p.allowed[0], p.allowed[1] = mv.route.AllowedRegions, mv.model.AllowedRegions
	if req.Tenant != "" {
		if tn, ok := v.tab.Tenant(req.Tenant); ok {
			p.allowed[2] = tn.AllowedRegions
		}
	}
	p.allowed[3], p.allowed[4] = req.AllowedRegions, req.KeyRegions
	restricted := len(p.allowed[0]) > 0 || len(p.allowed[1]) > 0 || len(p.allowed[2]) > 0 || len(p.allowed[3]) > 0 || len(p.allowed[4]) > 0
	client, hasClient := req.Client, req.HasClient
	if !hasClient {
		client, hasClient = v.self, v.hasSelf
	}
	now := time.Now()
	var byResidency, byPrice, byCapability, byContext, byBreaker, byForwarded, leaving int
	placedCopy := false // a target is a copy the table places
	for i := range mv.cands {
		c := &mv.cands[i]
		if c.kind == KindLocal && !c.placed && (r.cfg.Local == nil || !r.cfg.Local.Ready(c.engine)) {
			continue // an engine that neither has the model nor is placed to
		}
		ch := Choice{Kind: c.kind, Key: c.key, ID: c.id, UpstreamModel: c.upstream, Region: c.region, Addr: c.addr, stats: c.stats, written: c.written,
			Leaving: c.kind != KindProvider && !c.placed}
		ch.Breaker = c.stats.State(now)
		why := ""
		switch {
		case req.Forwarded && c.kind == KindPeer:
			why = ReasonForwarded
			byForwarded++
		case restricted && !allows(&p.allowed, c.region):
			why = ReasonResidency
			byResidency++
		case mv.route.MaxPrice > 0 && (!c.hasPrice || c.in+c.out > mv.route.MaxPrice):
			why = ReasonPrice
			byPrice++
		case req.Needs != 0 && !has(c.model, req.Needs):
			why = ReasonCapability
			byCapability++
		case req.PromptTokens > 0 && c.model.ContextLength > 0 && req.PromptTokens > c.model.ContextLength:
			why = ReasonContext
			byContext++
		default:
			why = r.health(v, c)
			if why == "" && ch.Breaker == BreakerOpen {
				why = ReasonBreaker
				byBreaker++
			}
		}
		if why != "" {
			ch.Reason = why
			p.Excluded = append(p.Excluded, ch)
			continue
		}
		ch.Score, ch.tie = r.score(p.Strategy, c, req, client, hasClient)
		p.Targets = append(p.Targets, ch)
		switch {
		case ch.Leaving:
			leaving++
		case c.kind != KindProvider:
			placedCopy = true
		}
	}
	if leaving > 0 && placedCopy {
		p.dropLeaving()
	}
	if len(p.Targets) == 0 && byBreaker > 0 && byResidency == 0 {
		// Every candidate left is behind an open breaker: try them
		// anyway, soonest to close first, rather than fail for sure. Not
		// under a residency policy that left targets out: there, the
		// client learns that the policy is why (403).
		// They move from Excluded to Targets: a candidate is in one.
		n := 0
		for _, ch := range p.Excluded {
			if ch.Reason != ReasonBreaker {
				p.Excluded[n] = ch
				n++
				continue
			}
			ch.Reason, ch.Force = "", true
			ch.Score = float64(ch.stats.openUntil.Load())
			p.Targets = append(p.Targets, ch)
		}
		p.Excluded = p.Excluded[:n]
		p.dropLeaving()
		slices.SortStableFunc(p.Targets, byScore)
		return
	}
	if len(p.Targets) == 0 {
		switch {
		case byResidency > 0:
			p.refuse(http.StatusForbidden, "region_not_allowed", "model", "")
		case byPrice > 0:
			p.refuse(http.StatusForbidden, "price_cap", "model", "")
		case byCapability > 0:
			p.refuse(http.StatusBadRequest, "capability_not_supported", needParam(req.Needs), needWord(req.Needs))
		case byContext > 0:
			p.refuse(http.StatusBadRequest, "context_length_exceeded", "messages", "")
		case byForwarded > 0 && len(p.Excluded) == byForwarded:
			p.refuse(http.StatusLoopDetected, "hop_limit", "", "")
		}
		return
	}
	if p.Strategy == table.StrategyWeighted {
		pickWeighted(p.Targets, mv)
	}
	slices.SortStableFunc(p.Targets, byScore)
}

// dropLeaving moves the leaving copies from Targets to Excluded when a
// placed copy is a target too: make before break is over, and the
// leaving ones only wait to unload.
func (p *Plan) dropLeaving() {
	if !slices.ContainsFunc(p.Targets, func(ch Choice) bool { return ch.Kind != KindProvider && !ch.Leaving }) {
		return
	}
	n := 0
	for _, ch := range p.Targets {
		if !ch.Leaving {
			p.Targets[n] = ch
			n++
			continue
		}
		ch.Reason, ch.Score, ch.Force = ReasonNotPlaced, 0, false
		p.Excluded = append(p.Excluded, ch)
	}
	p.Targets = p.Targets[:n]
}

func byScore(a, b Choice) int {
	switch {
	case a.Score < b.Score:
		return -1
	case a.Score > b.Score:
		return 1
	case a.tie < b.tie:
		return -1
	case a.tie > b.tie:
		return 1
	case a.written != b.written:
		return a.written - b.written
	}
	return strings.Compare(a.Key, b.Key)
}

// health says why a candidate cannot take a request now, "" when it can.
func (r *Router) health(v *view, c *cand) string {
	switch c.kind {
	case KindLocal:
		if r.cfg.Local == nil || !r.cfg.Local.Ready(c.engine) {
			return ReasonNotReady
		}
	case KindPeer:
		m := c.member.get()
		switch {
		case r.cfg.Links == nil:
			return ReasonNoLinks
		case !c.placed && (m == nil || !slices.Contains(m.Ready, c.upstream)):
			// Not placed there, and not a copy that still serves while
			// its placement moves.
			return ReasonNotPlaced
		case m == nil && !c.static:
			return ReasonUnknown
		case m != nil && !m.Alive:
			return ReasonDead
		case m != nil && m.Suspect:
			return ReasonSuspect
		case m != nil && m.Draining:
			return ReasonDraining
		case m != nil && !c.static && !slices.Contains(m.Ready, c.upstream):
			return ReasonNotReady
		case c.addr == "":
			return ReasonUnknown
		case r.cfg.Links.Down(c.id):
			return ReasonLinkDown
		}
	}
	return ""
}

// score is a candidate's place under a strategy: lower goes first, tie
// breaks equal scores.
func (r *Router) score(strategy string, c *cand, req *Request, client Point, hasClient bool) (score, tie float64) {
	rtt := 0.0
	if m := c.member.get(); m != nil {
		rtt = float64(m.RTT) / 1e6
	}
	switch strategy {
	case table.StrategyNearest:
		d := math.MaxFloat64
		if hasClient && c.hasPoint {
			d = geo.DistanceKm(client, c.point)
		}
		return d, rtt
	case table.StrategyFastest:
		t := c.stats.TTFT()
		if t == 0 {
			t = r.cfg.FastestPrior
		}
		return float64(t) / 1e6, rtt
	case table.StrategyCheapest:
		if !c.hasPrice {
			return math.MaxFloat64, 0
		}
		in, out := float64(req.PromptTokens), float64(req.MaxTokens)
		if out == 0 {
			out = float64(r.cfg.OutputTokens)
		}
		return (in*c.in + out*c.out) / 1e6, 0
	case table.StrategyLeastBusy:
		busy := c.stats.InFlight()
		switch {
		case c.kind == KindLocal && r.cfg.Local != nil:
			busy = r.cfg.Local.Busy()
		case c.kind == KindPeer && c.member != nil:
			m := c.member.get()
			busy = max(busy, m.InFlight+m.Queued)
		}
		return float64(busy), rtt
	case table.StrategyLocalFirst:
		switch c.kind {
		case KindLocal:
			return 0, 0
		case KindPeer:
			d := 0.0
			if hasClient && c.hasPoint {
				d = geo.DistanceKm(client, c.point)
			}
			return 1, d + rtt
		}
		return 2, float64(c.written)
	case table.StrategyWeighted:
		return -float64(c.weight), 0
	}
	// ordered: the route as written, then the fleet's copies, local
	// first, then peers nearest first.
	if c.kind == KindPeer && !c.static {
		d := 0.0
		if hasClient && c.hasPoint {
			d = geo.DistanceKm(client, c.point)
		}
		return float64(c.written), d + rtt
	}
	return float64(c.written), 0
}

// pickWeighted puts one target first, at random by weight; the rest stay
// ordered by weight.
func pickWeighted(ts []Choice, mv *modelView) {
	total := 0.0
	for i := range ts {
		total += -ts[i].Score
	}
	if total <= 0 {
		return
	}
	x := rand.Float64() * total
	for i := range ts {
		x += ts[i].Score
		if x < 0 || i == len(ts)-1 {
			ts[i].Score = math.Inf(-1)
			return
		}
	}
}

// allows reports whether region is in every set list.
func allows(lists *[5][]string, region string) bool {
	if region == "" {
		return false
	}
	for _, l := range lists {
		if len(l) > 0 && !slices.Contains(l, region) {
			return false
		}
	}
	return true
}

// intersect is the regions every set list allows, for explanations.
func intersect(lists *[5][]string) []string {
	var out []string
	first := true
	for _, l := range lists {
		if len(l) == 0 {
			continue
		}
		if first {
			out, first = slices.Clone(l), false
			continue
		}
		out = slices.DeleteFunc(out, func(r string) bool { return !slices.Contains(l, r) })
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func has(m *table.Model, n Needs) bool {
	if len(m.Capabilities) == 0 {
		return true
	}
	return (n&NeedTools == 0 || m.Has(table.CapTools)) &&
		(n&NeedVision == 0 || m.Has(table.CapVision)) &&
		(n&NeedJSON == 0 || m.Has(table.CapJSON))
}

func needParam(n Needs) string {
	switch {
	case n&NeedVision != 0:
		return "messages"
	case n&NeedTools != 0:
		return "tools"
	}
	return "response_format"
}

func needWord(n Needs) string {
	var w []string
	if n&NeedTools != 0 {
		w = append(w, "tools")
	}
	if n&NeedVision != 0 {
		w = append(w, "image input")
	}
	if n&NeedJSON != 0 {
		w = append(w, "JSON mode")
	}
	return strings.Join(w, " and ")
}

// refuse records why the plan is empty; its message is built here, off
// the hot path (a refusal is rare).
func (p *Plan) refuse(status int, code, param, detail string) {
	p.refusal = Refusal{Status: status, Code: code, Param: param}
	switch code {
	case "model_not_found":
		p.refusal.Message = fmt.Sprintf("The model %q does not exist on this Meridian node.", p.Model)
	case "region_not_allowed":
		p.refusal.Message = fmt.Sprintf("The data residency policy for model %q allows only regions %s, and no target there can serve the request now. It was not sent anywhere else.",
			p.Model, strings.Join(intersect(&p.allowed), ", "))
	case "price_cap":
		p.refusal.Message = fmt.Sprintf("No target for model %q is within the route's price cap.", p.Model)
	case "capability_not_supported":
		if detail == "image input" {
			p.refusal.Message = fmt.Sprintf("The model %q accepts text only, and no target for it takes images.", p.Model)
		} else {
			p.refusal.Message = fmt.Sprintf("The model %q does not support %s, and no target for it does.", p.Model, detail)
		}
	case "hop_limit":
		p.refusal.Message = fmt.Sprintf("A peer forwarded this request for model %q here, and this node could only forward it again; requests are never passed on twice.", p.Model)
	case "context_length_exceeded":
		p.refusal.Message = fmt.Sprintf("The request is longer than the context window of every target for model %q.", p.Model)
	}
	p.Refusal = &p.refusal
	if code == "region_not_allowed" {
		p.AllowedRegions = intersect(&p.allowed)
	}
}
