package fsm

import controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"

// Preview returns the state w would produce if it applied next to s,
// with the index s.Index()+1, or the error the write would be refused
// with. Nothing changes: s stays as it is and no FSM sees the preview.
// The control API checks the preview's routing table before a write goes
// through Raft. The real apply decides; a preview of a retried request
// ID shows the write applied twice, so callers skip those.
func (s *State) Preview(w *controlv1.Write) (*State, error) {
	txn := s.tree.Txn()
	if res := applyWrite(txn, w); res.GetCode() != "" {
		return nil, ResultError(res)
	}
	return &State{tree: txn.CommitOnly(), index: s.index + 1, dedupSeq: s.dedupSeq}, nil
}
