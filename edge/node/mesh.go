package node

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	anthropicapi "github.com/meridian-mesh/meridian/edge/api/anthropic"
	openaiapi "github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/geo"
	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/edge/link"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/router"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/table"
)

// This file wires the router's live inputs: gossip's membership view,
// link health, the engine's ready models, the placements the table makes
// on this node, and where each client is.

// newRouter builds the node's router over its links and engine.
func (n *Node) newRouter() *router.Router {
	rc := router.DefaultConfig()
	rc.Node, rc.Region = n.cfg.NodeID, n.cfg.Region
	rc.BreakerThreshold, rc.BreakerCooldown = n.cfg.Routing.BreakerThreshold, n.cfg.Routing.BreakerCooldown
	if n.link != nil {
		rc.Links = linkHealth{n.link}
	}
	if n.engine != nil {
		rc.Local = engineLocal{n.engine}
	}
	return router.New(rc)
}

type linkHealth struct{ t *link.Transport }

func (l linkHealth) Down(node string) bool { return l.t.Down(node) }

type engineLocal struct{ e *engine.Engine }

func (l engineLocal) Ready(name string) bool { return l.e.ModelReady(name) }
func (l engineLocal) Busy() int              { return l.e.Stats().Running }

// peerDown tells the fleet that this node's link declared a peer dead,
// so other edges stop sending to it before their own links notice. This
// node's router already left it out: it reads the link's Down.
func (n *Node) peerDown(node string, cause error) {
	if g := n.gossip; g != nil {
		n.log.Info("link: peer declared dead, suspicion broadcast", "peer", node, "err", cause)
		g.Suspect(node)
	}
}

// peerTarget makes the gateway's forwarder to a peer.
func (n *Node) peerTarget(node, addr string) (provider.Provider, error) {
	return n.link.Peer(node, addr)
}

// followMembers feeds gossip's view of the fleet to the router, every
// 200–250 ms and at once when gossip hears a suspicion, until stop
// closes. Only a changed view is handed over.
func (n *Node) followMembers(stop <-chan struct{}) {
	var last []router.Member
	seen := map[string]time.Time{} // leaving model -> when first seen ready where placed
	for {
		var ms []router.Member
		for _, m := range n.gossip.Members() {
			if m.ID == n.cfg.NodeID {
				continue
			}
			ms = append(ms, router.Member{
				ID: m.ID, Region: m.Region, Addr: m.QUICAddr, Alive: m.State == gossip.StateAlive, Suspect: m.Suspect, Draining: m.Draining,
				Ready: m.ReadyModels, InFlight: m.Load.InFlight, Queued: m.Load.QueueDepth, RTT: m.RTT,
			})
		}
		if !slices.EqualFunc(ms, last, sameMember) {
			n.gw.Router().SetMembers(ms)
			last = ms
		}
		n.handoff(ms, seen)
		n.refreshReady()
		select {
		case <-stop:
			return
		case <-n.gossip.Changed():
		case <-time.After(backoff.Between(200*time.Millisecond, 250*time.Millisecond)):
		}
	}
}

func sameMember(a, b router.Member) bool {
	return a.ID == b.ID && a.Region == b.Region && a.Addr == b.Addr && a.Alive == b.Alive && a.Suspect == b.Suspect && a.Draining == b.Draining &&
		a.InFlight == b.InFlight && a.Queued == b.Queued && slices.Equal(a.Ready, b.Ready) &&
		// RTT moves all the time; only a change of a fifth counts.
		absDur(a.RTT-b.RTT)*5 <= max(a.RTT, b.RTT)
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// handoffSettle is how long a model this node is leaving keeps serving
// after gossip first shows it ready where it is placed now: time for
// that news to reach every edge, so that none sends here after the
// unload.
const handoffSettle = 2 * time.Second

// handoff ends the handoff of each model the engine is leaving once a
// live member the table now places it on has had it ready for
// handoffSettle, or at once when the table places it nowhere else.
// seen keeps, across calls, when each was first seen ready there; ms
// nil means no view of the fleet yet. The engine's own
// local.handoff_timeout bounds the wait.
func (n *Node) handoff(ms []router.Member, seen map[string]time.Time) {
	if n.engine == nil {
		return
	}
	leaving := n.engine.Leaving()
	for name := range seen {
		if !slices.Contains(leaving, name) {
			delete(seen, name)
		}
	}
	tab := n.gw.Table()
	now := time.Now()
	for _, name := range leaving {
		elsewhere, ready := false, true
		for _, m := range tab.Models() {
			if m.Local == nil || m.EngineName() != name {
				continue
			}
			placed := slices.DeleteFunc(slices.Clone(tab.PlacedOn(m.ID)), func(id string) bool { return id == n.cfg.NodeID })
			if len(placed) == 0 {
				continue
			}
			elsewhere = true
			if !slices.ContainsFunc(ms, func(mb router.Member) bool {
				return mb.Alive && !mb.Suspect && !mb.Draining && slices.Contains(placed, mb.ID) && slices.Contains(mb.Ready, m.ID)
			}) {
				ready = false
			}
		}
		switch {
		case !elsewhere:
			n.engine.Release(name)
		case !ready || ms == nil:
			delete(seen, name)
		case seen[name].IsZero():
			seen[name] = now
		case now.Sub(seen[name]) >= handoffSettle:
			n.engine.Release(name)
		}
	}
}

// place makes the engine run what the table places on this node, plus
// the models the config file places.
func (n *Node) place(tab *table.Compiled) {
	here := tab.PlacedHere(n.cfg.NodeID)
	if n.engine == nil {
		if len(here) > 0 {
			n.log.Warn("models are placed on this node, but it runs no local engine (local.enabled is false)", "models", len(here))
		}
		return
	}
	models := slices.Clone(n.cfg.Local.Models)
	for _, m := range here {
		if slices.ContainsFunc(models, func(x engine.Model) bool { return x.Name == m.EngineName() }) {
			continue
		}
		models = append(models, engine.Model{Name: m.EngineName(), GGUF: m.Local.GGUF, Quantize: m.Local.Quantization, Pull: m.Local.Ollama != ""})
	}
	n.engine.Place(models)
	n.handoff(nil, nil) // a model placed nowhere else goes at once
}

// readyModels are the model IDs this node's engine serves now: what it
// gossips as ready and reports to the control plane.
func (n *Node) readyModels() []string {
	if n.engine == nil {
		return nil
	}
	ready := n.engine.ReadyModels()
	tab := n.gw.Table()
	var ids []string
	for _, m := range tab.Models() {
		if slices.Contains(ready, m.EngineName()) {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// gossipReady gossips the engine's ready models as they are now.
func (n *Node) gossipReady() {
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	n.gossiped = n.readyModels()
	n.gossip.SetReadyModels(n.gossiped)
}

// refreshReady gossips the engine's ready models again when they drifted
// from what was last gossiped, or from what the node's own gossip record
// says: a guard, run with every look at the fleet, so that a change
// whose notice went astray, or a record some other write left behind,
// is corrected within a quarter of a second rather than never.
func (n *Node) refreshReady() {
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	ready := n.readyModels()
	if slices.Equal(ready, n.gossiped) && slices.Equal(ready, n.gossip.ReadyModels()) {
		return
	}
	n.gossiped = ready
	n.gossip.SetReadyModels(ready)
}

// readyChanged tells the fleet at once when the engine's ready set moves.
func (n *Node) readyChanged() {
	if n.gossip != nil {
		n.gossipReady()
	}
	if n.sync != nil {
		n.sync.ReportReady()
	}
}

// client finds where a request's client is, for the router.
func (n *Node) client(r *http.Request) *gateway.Client {
	c := &gateway.Client{}
	if n.locator != nil {
		if loc := n.locator.Locate(r.Header, r.RemoteAddr); loc.Source != geo.SourceEdge {
			c.Location, c.HasLocation = loc.Point, true
		}
	}
	return c
}

// route is the dry run: GET /v1/meridian/route?model=…[&lat=…&lon=…|
// &country=…][&key=KEY_ID]. It lists every candidate with its score
// and every excluded one with the reason, and sends nothing.
//
// POST sends a chat request as its body (OpenAI's format, or
// Anthropic's with anthropic-version), and the answer says too whether
// the edge cache would answer it now ("cache"), for the key named by
// &key= and the Cache-Control header sent.
func (n *Node) route(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := router.Request{Model: q.Get("model")}
	var chat *llm.Request
	if r.Method == http.MethodPost {
		body, e := n.api.ReadBody(w, r)
		if e == nil {
			if r.Header.Get("Anthropic-Version") != "" {
				chat, e = anthropicapi.DecodeMessages(body)
				if e == nil {
					chat.Native, chat.NativeFormat = body, llm.FormatAnthropic
				}
			} else {
				chat, e = openaiapi.DecodeChat(body)
			}
		}
		if e != nil {
			openaiapi.WriteError(w, e)
			return
		}
		if req.Model == "" {
			req.Model = chat.Model
		}
	}
	if req.Model == "" {
		openaiapi.WriteError(w, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "model", "Missing required parameter: 'model'."))
		return
	}
	switch {
	case q.Has("lat") || q.Has("lon"):
		loc, ok := geo.Parse(q.Get("lat") + "," + q.Get("lon"))
		if !ok {
			openaiapi.WriteError(w, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "lat", "lat and lon must be decimal degrees within ±90 and ±180."))
			return
		}
		req.Client, req.HasClient = loc.Point, true
	case q.Has("country"):
		p, ok := geo.Country(q.Get("country"))
		if !ok {
			openaiapi.WriteError(w, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "country", "Unknown ISO 3166-1 alpha-2 country code %q.", q.Get("country")))
			return
		}
		req.Client, req.HasClient = p, true
	default:
		c := n.client(r)
		req.Client, req.HasClient = c.Location, c.HasLocation
	}
	var access *api.Access
	if id := q.Get("key"); id != "" {
		tab := n.gw.Table()
		if access = n.api.Access(tab, id, req.Model, time.Now()); access == nil {
			openaiapi.WriteError(w, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "key", "No key with ID %q.", id))
			return
		}
		i := slices.IndexFunc(tab.Table().Keys, func(k *table.Key) bool { return k.ID == id })
		k := tab.Table().Keys[i]
		req.Tenant, req.KeyRegions = k.Tenant, k.AllowedRegions
	}
	if v := q.Get("prompt_tokens"); v != "" {
		req.PromptTokens, _ = strconv.Atoi(v)
	}
	ex := n.gw.Explain(&req)
	if ex.Error != nil && ex.Error.Status == http.StatusNotFound {
		openaiapi.WriteError(w, ex.Error)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// With &key=, the plan comes with what the key may do now: its
	// limits and their use, its tenant's budget, and why its requests
	// would be refused before routing.
	var cached *api.CacheExplanation
	if chat != nil {
		cached = n.api.ExplainCache(n.gw.Snapshot(), q.Get("key"), chat, r.Header.Get("Cache-Control"))
	}
	enc.Encode(struct {
		*gateway.Explanation
		Access *api.Access           `json:"access,omitempty"`
		Cache  *api.CacheExplanation `json:"cache,omitempty"`
	}{ex, access, cached})
}
