package distribution

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/meridian-mesh/meridian/control/fsm"
)

// fsmIdentities admits the edges the replicated state lists with a NATS
// key and has not revoked. The key index is rebuilt once per state, not
// per connection, so a fleet reconnecting at once costs one pass.
type fsmIdentities struct {
	f     *fsm.FSM
	index atomic.Pointer[keyIndex]
}

type keyIndex struct {
	state *fsm.State
	nodes map[string]string // NATS public key → node
}

func (i *fsmIdentities) EdgeByKey(pub string) (string, bool) {
	s := i.f.State()
	idx := i.index.Load()
	if idx == nil || idx.state != s {
		idx = &keyIndex{state: s, nodes: map[string]string{}}
		for _, n := range s.NodeIdentities() {
			if n.GetNatsKey() != "" && !n.GetRevoked() {
				idx.nodes[n.GetNatsKey()] = n.GetNode()
			}
		}
		i.index.Store(idx)
	}
	node, ok := idx.nodes[pub]
	return node, ok
}

// identityPrint is what a change of admitted edges changes.
func identityPrint(s *fsm.State) string {
	b := []byte{}
	for _, n := range s.NodeIdentities() {
		if !n.GetRevoked() {
			b = append(b, n.GetNatsKey()...)
		}
	}
	return string(b)
}

// watchRevocations closes the connections of edges the state no longer
// admits, as soon as the change applies here: every control node does
// this for its own server, so a revoked edge loses the bus within one
// apply.
func (d *Distribution) watchRevocations(ctx context.Context, f *fsm.FSM, log *slog.Logger) {
	last := identityPrint(f.State())
	for {
		w := f.Watch()
		if p := identityPrint(f.State()); p != last {
			last = p
			if n := d.ns.Refresh(); n > 0 {
				log.Info("closed the NATS connections of revoked edges", "connections", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w:
		}
	}
}
