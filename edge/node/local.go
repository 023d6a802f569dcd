package node

import (
	"fmt"

	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/table"
)

// newProvider builds the gateway's targets: the node's own engine for
// kind local, an adapter for everything else.
func (n *Node) newProvider(p table.Provider) (provider.Provider, error) {
	if p.Kind != table.KindLocal {
		return provider.New(p)
	}
	if n.engine == nil {
		return nil, fmt.Errorf("provider %q is the local engine, but this node runs none", p.ID)
	}
	return n.engine, nil
}

// LocalStatus is the local engine's part of /readyz.
type LocalStatus struct {
	Up       bool                          `json:"up"`
	Models   map[string]engine.ModelStatus `json:"models"`
	NotReady []string                      `json:"not_ready,omitempty"`
	Running  int                           `json:"running"`
	Queued   int                           `json:"queued"`
	Restarts uint64                        `json:"restarts"`
}

func (n *Node) localStatus() (*LocalStatus, bool) {
	if n.engine == nil {
		return nil, true
	}
	ready, notReady := n.engine.Ready()
	st := n.engine.Stats()
	return &LocalStatus{Up: st.Up, Models: n.engine.Models(), NotReady: notReady,
		Running: st.Running, Queued: st.Queued, Restarts: st.Restarts}, ready
}
