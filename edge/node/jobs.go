package node

import (
	"net/http"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/jobs"
	"github.com/meridian-mesh/meridian/shared/table"
)

// newJobs builds the node's batch service (edge/jobs) and adds its
// routes to mux. Its lines run through the node's own handler, so they
// are routed, limited and recorded like any request. Batch work yields
// to interactive traffic: no line starts while a request waits for a
// local engine slot, and a running line is preempted when one does.
func (n *Node) newJobs(mux *http.ServeMux) error {
	jc := jobs.DefaultConfig()
	jc.Node, jc.Logger = n.cfg.NodeID, n.log
	if j := n.cfg.Jobs; j != (config.Jobs{}) { // a config built by hand keeps the defaults
		jc.Workers, jc.AckWait, jc.MaxDeliver = j.Workers, j.AckWait, j.MaxDeliver
		jc.WebhookTimeout, jc.WebhookRetryFor = j.WebhookTimeout, j.WebhookRetryFor
	}
	jc.Authenticate = n.api.Authenticate
	jc.Run = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.handler.ServeHTTP(w, r) })
	jc.LocalModels = func() []string {
		var ids []string
		for _, m := range n.gw.Table().Models() {
			if n.servesLocally(m.ID) {
				ids = append(ids, m.ID)
			}
		}
		return ids
	}
	jc.Busy, jc.Preempt = n.batchMustWait, n.batchMustYield
	jc.Tenant = func(id string) *table.Tenant {
		t, _ := n.gw.Table().Tenant(id)
		return t
	}
	var err error
	if n.jobs, err = jobs.New(jc); err != nil {
		return err
	}
	n.jobs.Register(mux)
	return nil
}

// batchMustWait says whether a batch line for model must wait. Lines
// for a model this node serves locally take an engine slot only when
// one is free, nothing waits for one and no interactive request is in
// flight here (requests in flight less the batch's own); so an
// interactive request waits at most for the lines already holding
// slots. Lines for remote models are bounded by the worker count only:
// a provider's concurrency is not this node's to measure.
func (n *Node) batchMustWait(model string) bool {
	if n.engine == nil || !n.servesLocally(model) {
		return false
	}
	if n.metrics.RequestsInFlight()-int64(n.jobs.Running()) > 0 {
		return true
	}
	st := n.engine.Stats()
	// Batch lines hold at most all slots but one (one, with one slot),
	// so an interactive arrival usually finds a slot free.
	return st.Queued > 0 || st.Running >= max(1, n.cfg.Local.NumParallel-1)
}

// batchMustYield says whether a running batch line for model must give
// its engine slot back now: an interactive request is in flight here
// and something waits for a slot. The line is cancelled and requeued
// (edge/jobs), so the interactive request waits for the cancellation,
// not for the line's whole answer.
func (n *Node) batchMustYield(model string) bool {
	if n.engine == nil || n.jobs.Running() == 0 || !n.servesLocally(model) {
		return false
	}
	if n.metrics.RequestsInFlight()-int64(n.jobs.Running()) <= 0 {
		return false
	}
	return n.engine.Stats().Queued > 0
}

// servesLocally reports whether model has a route to the local engine.
func (n *Node) servesLocally(model string) bool {
	tab := n.gw.Table()
	r, ok := tab.Route(model)
	if !ok {
		return false
	}
	for _, t := range r.Targets {
		if p, ok := tab.Provider(t.Provider); ok && p.Kind == table.KindLocal {
			return true
		}
	}
	return false
}

// asyncFirst hands requests that prefer an async answer (Prefer:
// respond-async on /v1/chat/completions or /v1/messages) to the jobs
// service, and the rest to next. A job's own run carries no Prefer
// header, so it is served by next.
func (n *Node) asyncFirst(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if jobs.PrefersAsync(r) {
			n.jobs.SubmitAsync(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Jobs returns the node's batch service. A node following a control
// plane binds it itself; benchmarks bind a standalone node's to a bus
// of their own (Start).
func (n *Node) Jobs() *jobs.Service { return n.jobs }

// startJobs binds the batch service to the control plane's JetStream;
// an edge without a control plane answers the batch APIs with 503.
func (n *Node) startJobs() (stop func(), err error) {
	if n.sync != nil {
		if err := n.jobs.Start(n.sync.Conn()); err != nil {
			return nil, err
		}
	}
	return n.jobs.Close, nil
}
