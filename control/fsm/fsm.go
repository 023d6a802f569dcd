// Package fsm is the control plane's replicated state machine: the fleet
// state (regions, nodes, models, placements, providers, routes, keys,
// tenants, prices and the control nodes' own addresses), the commands that
// change it, and its snapshot format.
//
// Apply must be deterministic: every replica applies the same commands in
// the same order and must end in the same state, so this package reads no
// clock, no randomness, no environment and no files, and never depends on
// map iteration order. It must never do I/O beyond the writer and reader
// it is handed for snapshots, and never block.
package fsm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// DedupWindow is how many recent request IDs the state remembers with
// their results. It is part of the replicated state machine's definition,
// so it is a constant: replicas with different windows would diverge.
const DedupWindow = 16384

// FSM holds the current State and applies commands to it. Apply is called
// by one goroutine at a time (raft's FSM goroutine); readers call State
// and Watch from any goroutine.
type FSM struct {
	state atomic.Pointer[State]

	// mu guards watch. It is a leaf lock: nothing else is locked or
	// called while it is held. The state itself needs no lock.
	mu    sync.Mutex
	watch chan struct{}

	onApply func(index uint64, requestID string)
	logger  *slog.Logger

	// halted is set, once, by the first log entry this replica cannot
	// apply; from then on it applies nothing (see Apply).
	halted atomic.Pointer[HaltError]
}

// Config configures an FSM.
type Config struct {
	// Logger receives warnings about ignored commands. Nil means
	// slog.Default().
	Logger *slog.Logger
	// OnApply, when set, is called once for every command that changed
	// the state (not for deduplicated retries). It runs on the apply
	// goroutine and must not block.
	OnApply func(index uint64, requestID string)
}

// New returns an FSM with empty state.
func New(cfg Config) *FSM {
	f := &FSM{watch: make(chan struct{}), onApply: cfg.OnApply, logger: cfg.Logger}
	if f.logger == nil {
		f.logger = slog.Default()
	}
	f.state.Store(newState())
	return f
}

// State returns the current state. It never changes; a later apply
// produces a new one.
func (f *FSM) State() *State { return f.state.Load() }

// Watch returns a channel closed at the next change of state, for blocking
// queries.
func (f *FSM) Watch() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watch
}

func (f *FSM) publish(s *State) {
	f.state.Store(s)
	f.mu.Lock()
	close(f.watch)
	f.watch = make(chan struct{})
	f.mu.Unlock()
}

// Apply applies one command, encoded by Encode, at a Raft index, and
// returns its result. A rejected write returns a Result with a code; that
// is an outcome, not a failure of Apply.
//
// An unknown command type without the IgnoreUnknown bit, or a body that
// does not decode, halts this replica: applying past it would let it
// diverge from the others, and panicking would take down every replica
// that receives the entry. A halted FSM logs the entry once, answers every
// later Apply with CodeHalted and changes nothing until the node is
// rebuilt (Halted reports why, for health checks and metrics).
func (f *FSM) Apply(index uint64, data []byte) *controlv1.Result {
	if h := f.halted.Load(); h != nil {
		return &controlv1.Result{Index: index, Code: CodeHalted, Message: h.Error()}
	}
	t, msg, err := Decode(data)
	if err != nil {
		if t&IgnoreUnknown != 0 && msg == nil && errors.Is(err, ErrIgnorable) {
			f.logger.Warn("ignoring unknown command type", "type", int(t), "index", index)
			return &controlv1.Result{Index: index}
		}
		h := &HaltError{Index: index, Err: err}
		if f.halted.CompareAndSwap(nil, h) {
			f.logger.Error("replica halted: a log entry cannot be applied; this node applies nothing more until it is rebuilt",
				"index", index, "err", err)
			f.mu.Lock()
			close(f.watch)
			f.watch = make(chan struct{})
			f.mu.Unlock()
		}
		return &controlv1.Result{Index: index, Code: CodeHalted, Message: h.Error()}
	}
	cur := f.State()
	reqID := RequestID(msg)
	if reqID != "" {
		if res, ok := cur.Result(reqID); ok {
			return res
		}
	}
	txn := cur.tree.Txn()
	var res *controlv1.Result
	usageNow, usageChanged := cur.usageNow, false
	switch m := msg.(type) {
	case *controlv1.UsageBatch:
		res, usageNow, usageChanged = applyUsage(txn, cur.usageNow, m)
	case *controlv1.Write:
		res = applyWrite(txn, m)
	case *controlv1.SetMember:
		res = applySetMember(txn, m)
	case *controlv1.SetIdentity:
		res = applySetIdentity(txn, m)
	case *controlv1.RemoveMember:
		if m.GetId() == "" {
			res = errResult(invalid("id", "is required"))
		} else {
			txn.Delete(memberKey(m.GetId()))
			res = &controlv1.Result{}
		}
	case *controlv1.SetClusterCA:
		res = applySetClusterCA(txn, m)
	case *controlv1.CreateJoinToken:
		res = applyCreateJoinToken(txn, m)
	case *controlv1.RedeemJoinToken:
		res = applyRedeemJoinToken(txn, m)
	case *controlv1.RevokeNode:
		res = applyRevokeNode(txn, m)
	}
	res.Index = index
	next := &State{index: cur.index, dedupSeq: cur.dedupSeq, usageNow: cur.usageNow}
	_, isUsage := msg.(*controlv1.UsageBatch)
	switch {
	case res.GetCode() == "" && isUsage:
		// Totals are not part of the routing table: only a change of
		// budget states makes a new revision for edges.
		next.usageNow = usageNow
		if usageChanged {
			next.index = index
		}
	case res.GetCode() == "":
		next.index = index
	default:
		// A rejected write changes nothing but its dedup record.
		txn = cur.tree.Txn()
	}
	if reqID != "" {
		next.dedupSeq++
		txn.Insert(dedupKey(reqID), &controlv1.Dedup{RequestId: reqID, Seq: next.dedupSeq, Result: res})
		txn.Insert(seqKey(next.dedupSeq), reqID)
		if next.dedupSeq > DedupWindow {
			old := next.dedupSeq - DedupWindow
			if id, ok := txn.Get(seqKey(old)); ok {
				txn.Delete(seqKey(old))
				txn.Delete(dedupKey(id.(string)))
			}
		}
	}
	next.tree = txn.CommitOnly()
	f.publish(next)
	if res.GetCode() == "" && f.onApply != nil {
		f.onApply(index, reqID)
	}
	return res
}

func errResult(err error) *controlv1.Result {
	e, ok := err.(*Error)
	if !ok {
		e = &Error{Code: CodeInvalid, Message: err.Error()}
	}
	return &controlv1.Result{Code: e.Code, Message: e.Message, Field: e.Field}
}

// ResultError turns a failed Result back into an *Error, or nil.
func ResultError(r *controlv1.Result) error {
	if r.GetCode() == "" {
		return nil
	}
	return &Error{Code: r.GetCode(), Field: r.GetField(), Message: r.GetMessage()}
}

func applySetMember(txn txnView, m *controlv1.SetMember) *controlv1.Result {
	mem := m.GetMember()
	if mem.GetId() == "" || mem.GetRaftAddr() == "" {
		return errResult(invalid("member", "needs an id and a raft address"))
	}
	txn.Insert(memberKey(mem.GetId()), proto.Clone(mem))
	return &controlv1.Result{}
}

// HaltError is why a replica stopped applying: the first entry it could
// not apply.
type HaltError struct {
	Index uint64
	Err   error
}

func (h *HaltError) Error() string {
	return fmt.Sprintf("replica halted at log entry %d: %v", h.Index, h.Err)
}

func (h *HaltError) Unwrap() error { return h.Err }

// Halted returns why this replica stopped applying, or nil while it
// applies normally.
func (f *FSM) Halted() error {
	if h := f.halted.Load(); h != nil {
		return h
	}
	return nil
}
