package api

import (
	"errors"

	"github.com/meridian-mesh/meridian/control/compile"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// A write the FSM accepts can still leave a state whose routing table the
// compiler rejects; the rejection then shows only in `meridianctl status`
// while edges keep the last valid table. So the leader previews each
// write (fsm.State.Preview) and runs the table's own consistency check,
// tablewire.Validate, on the result: references, a possible target for
// every route, and nothing that could never route (allowed regions
// nobody serves in, region placements on empty regions, placements of
// models without a local source). A write that breaks it is refused with
// 400 "invalid", naming the table field, such as
// "routes[tiny].allowed_regions".
//
// Two things stay with the compiler alone. The edge's own checks
// (tablewire.CheckEdge) refuse a model with neither a route nor a
// placement, a state every model passes through when built one entity at
// a time. And while the current state already fails the check (written
// before it existed), writes go through, since they may be the fix;
// the compiler keeps rejecting until it passes. Two concurrent writes
// that pass alone but not together are likewise left to the compiler.

// validState remembers the last state the check ran on, by index.
type validState struct {
	index uint64
	ok    bool
}

// checkRoutable returns an *fsm.Error when cmd would break the table of
// a state whose table is consistent; nil otherwise, including when the
// FSM itself will refuse cmd (the apply then says why).
func (s *Server) checkRoutable(cmd *controlv1.Write) error {
	cur := s.node.FSM().State()
	if _, retried := cur.Result(cmd.GetRequestId()); retried {
		return nil
	}
	if !s.consistent(cur) {
		return nil
	}
	next, err := cur.Preview(cmd)
	if err != nil {
		return nil
	}
	err = tablewire.Validate(compile.Build(next))
	var fe *tablewire.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return &fsm.Error{Code: fsm.CodeInvalid, Field: fe.Field, Message: fe.Msg}
	}
	return &fsm.Error{Code: fsm.CodeInvalid, Message: err.Error()}
}

// consistent reports whether st's table passes tablewire.Validate,
// remembering the answer for the state's index.
func (s *Server) consistent(st *fsm.State) bool {
	if v := s.valid.Load(); v != nil && v.index == st.Index() {
		return v.ok
	}
	ok := tablewire.Validate(compile.Build(st)) == nil
	s.valid.Store(&validState{index: st.Index(), ok: ok})
	return ok
}
