package node

import (
	"net/http"

	"github.com/meridian-mesh/meridian/edge/jobs"
)

// newJobs builds the node's batch service (edge/jobs) and adds its
// routes to mux. Its lines run through the node's own handler, so they
// are routed, limited and recorded like any request. Batch work yields
// to interactive traffic: no line starts while a request waits for a
// local engine slot.
func (n *Node) newJobs(mux *http.ServeMux) error {
	jc := jobs.DefaultConfig()
	jc.Node, jc.Logger = n.cfg.NodeID, n.log
	jc.Authenticate = n.api.Authenticate
	jc.Run = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.handler.ServeHTTP(w, r) })
	jc.LocalModels = func() []string {
		var ids []string
		for _, m := range n.gw.Table().PlacedHere(n.cfg.NodeID) {
			ids = append(ids, m.ID)
		}
		return ids
	}
	jc.Busy = func() bool { return n.engine != nil && n.engine.Stats().Queued > 0 }
	var err error
	if n.jobs, err = jobs.New(jc); err != nil {
		return err
	}
	n.jobs.Register(mux)
	return nil
}

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
