package fsm

import (
	"fmt"
	"strings"

	iradix "github.com/hashicorp/go-immutable-radix"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// State is one immutable version of the fleet state. Every apply builds a
// new State that shares all unchanged parts with the old one, so readers
// and snapshots hold a State without locks or copies. Nothing reachable
// from a State is ever modified, including the entity messages it hands
// out: callers must not modify them either.
type State struct {
	// tree maps keys to values:
	//   "e/<kind>/<id>" → entity message
	//   "h/<hash>"      → key ID holding that hash
	//   "m/<id>"        → *controlv1.Member
	//   "d/<request>"   → *controlv1.Dedup
	//   "s/<seq, 20 digits>" → request ID, for evicting the oldest
	tree *iradix.Tree
	// index is the Raft index of the last command that changed the state.
	index    uint64
	dedupSeq uint64
	// usageNow is the time of the last usage batch, Unix ms (usage.go).
	usageNow int64
}

func newState() *State { return &State{tree: iradix.New()} }

func entityKey(kind, id string) []byte { return []byte("e/" + kind + "/" + id) }
func hashKey(h string) []byte          { return []byte("h/" + h) }
func memberKey(id string) []byte       { return []byte("m/" + id) }
func dedupKey(id string) []byte        { return []byte("d/" + id) }
func seqKey(seq uint64) []byte         { return fmt.Appendf(nil, "s/%020d", seq) }

// Index returns the Raft index of the last command that changed the state.
func (s *State) Index() uint64 { return s.index }

// Get returns one entity. kind is a singular kind name.
func (s *State) Get(kind, id string) (proto.Message, bool) {
	v, ok := s.tree.Get(entityKey(kind, id))
	if !ok {
		return nil, false
	}
	return v.(proto.Message), true
}

// List returns every entity of a kind, sorted by ID.
func (s *State) List(kind string) []proto.Message {
	var out []proto.Message
	s.tree.Root().WalkPrefix([]byte("e/"+kind+"/"), func(_ []byte, v any) bool {
		out = append(out, v.(proto.Message))
		return false
	})
	return out
}

// Count returns how many entities of a kind there are.
func (s *State) Count(kind string) int {
	n := 0
	s.tree.Root().WalkPrefix([]byte("e/"+kind+"/"), func([]byte, any) bool { n++; return false })
	return n
}

// Members returns the control nodes' recorded addresses, sorted by ID.
func (s *State) Members() []*controlv1.Member {
	var out []*controlv1.Member
	s.tree.Root().WalkPrefix([]byte("m/"), func(_ []byte, v any) bool {
		out = append(out, v.(*controlv1.Member))
		return false
	})
	return out
}

// Member returns one control node's recorded addresses.
func (s *State) Member(id string) (*controlv1.Member, bool) {
	v, ok := s.tree.Get(memberKey(id))
	if !ok {
		return nil, false
	}
	return v.(*controlv1.Member), true
}

// Result returns the remembered outcome of a request ID, if it is still
// within the deduplication window.
func (s *State) Result(requestID string) (*controlv1.Result, bool) {
	v, ok := s.tree.Get(dedupKey(requestID))
	if !ok {
		return nil, false
	}
	return v.(*controlv1.Dedup).GetResult(), true
}

// KeyByHash returns the ID of the key holding a hash.
func (s *State) KeyByHash(hash string) (string, bool) {
	v, ok := s.tree.Get(hashKey(hash))
	if !ok {
		return "", false
	}
	return v.(string), true
}

// Equal reports whether two states hold the same entities, members and
// usage (totals, applied request IDs and edge runs, budget states);
// tests use it to compare replicas.
func (s *State) Equal(o *State) bool {
	if s.tree.Len() != o.tree.Len() {
		return false
	}
	equal := true
	s.tree.Root().Walk(func(k []byte, v any) bool {
		if !strings.HasPrefix(string(k), "e/") && !strings.HasPrefix(string(k), "m/") &&
			!strings.HasPrefix(string(k), "u/") && !strings.HasPrefix(string(k), "ua/") && !strings.HasPrefix(string(k), "us/") && !strings.HasPrefix(string(k), "b/") {
			return false
		}
		ov, ok := o.tree.Get(k)
		if !ok || !proto.Equal(v.(proto.Message), ov.(proto.Message)) {
			equal = false
			return true
		}
		return false
	})
	return equal
}
