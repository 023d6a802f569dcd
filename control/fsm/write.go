package fsm

import (
	"fmt"
	"sort"
	"strings"

	iradix "github.com/hashicorp/go-immutable-radix"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

type txnView = *iradix.Txn

// maxOps bounds one write, so one command cannot stall every replica.
const maxOps = 10000

// applyWrite applies a Write's ops to txn, all or none. Ops apply in
// order; references are checked once all have applied, so a write may
// list an entity after one that refers to it, and delete a pair of
// entities that refer to each other.
func applyWrite(txn txnView, w *controlv1.Write) *controlv1.Result {
	if len(w.GetOps()) == 0 {
		return errResult(invalid("ops", "a write needs at least one op"))
	}
	if len(w.GetOps()) > maxOps {
		return errResult(invalid("ops", "a write holds at most %d ops", maxOps))
	}
	var puts []proto.Message
	deleted := map[string]bool{}
	for i, op := range w.GetOps() {
		if err := applyOp(txn, op, &puts, deleted); err != nil {
			if e, ok := err.(*Error); ok && len(w.GetOps()) > 1 {
				e.Message = fmt.Sprintf("op %d: %s", i, e.Message)
			}
			return errResult(err)
		}
	}
	// Forward references of what was written.
	for _, m := range puts {
		k, _ := KindOf(m)
		cur, ok := txn.Get(entityKey(k.Name, k.ID(m)))
		if !ok || cur != m {
			continue // replaced or deleted later in the same write
		}
		for _, r := range k.refs(m) {
			if _, ok := txn.Get(entityKey(r.kind, r.id)); !ok {
				return errResult(&Error{Code: CodeReference, Field: r.field,
					Message: fmt.Sprintf("%s %q %s refers to %s %q, which does not exist", k.Name, k.ID(m), r.field, r.kind, r.id)})
			}
		}
		if pl, ok := m.(*controlv1.Placement); ok {
			if md, ok := txn.Get(entityKey(KindModel, pl.GetModel())); ok && !md.(*controlv1.Model).GetLocal() {
				return errResult(&Error{Code: CodeReference, Field: "model",
					Message: fmt.Sprintf("placement %q places model %q, which is not local", pl.GetId(), pl.GetModel())})
			}
		}
	}
	// Back references to what was deleted, in a fixed order.
	keys := make([]string, 0, len(deleted))
	for k := range deleted {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, dk := range keys {
		kind, id, _ := strings.Cut(dk, "/")
		k := kindsByName[kind]
		if _, back := txn.Get(entityKey(kind, id)); back {
			continue // put again later in the same write
		}
		for _, depName := range k.deps {
			dep := kindsByName[depName]
			var err error
			txn.Root().WalkPrefix([]byte("e/"+depName+"/"), func(_ []byte, v any) bool {
				m := v.(proto.Message)
				for _, r := range dep.refs(m) {
					if r.kind == kind && r.id == id {
						err = &Error{Code: CodeConflict, Field: "id",
							Message: fmt.Sprintf("%s %q is still referred to by %s %q (%s)", kind, id, depName, dep.ID(m), r.field)}
						return true
					}
				}
				return false
			})
			if err != nil {
				return errResult(err)
			}
		}
	}
	return &controlv1.Result{}
}

func applyOp(txn txnView, op *controlv1.Op, puts *[]proto.Message, deleted map[string]bool) error {
	switch op.GetAction() {
	case controlv1.Op_ACTION_PUT, controlv1.Op_ACTION_CREATE:
		m := opEntity(op)
		if m == nil {
			return invalid("entity", "a put names no entity")
		}
		k, _ := KindOf(m)
		if err := k.validate(m); err != nil {
			return err
		}
		id := k.ID(m)
		old, exists := txn.Get(entityKey(k.Name, id))
		if exists && op.GetAction() == controlv1.Op_ACTION_CREATE {
			return &Error{Code: CodeConflict, Field: "id", Message: fmt.Sprintf("%s %q already exists", k.Name, id)}
		}
		if key, ok := m.(*controlv1.Key); ok {
			if holder, ok := txn.Get(hashKey(key.GetHash())); ok && holder.(string) != id {
				return &Error{Code: CodeConflict, Field: "hash", Message: fmt.Sprintf("key %q already has this hash", holder)}
			}
			if exists {
				txn.Delete(hashKey(old.(*controlv1.Key).GetHash()))
			}
			txn.Insert(hashKey(key.GetHash()), id)
		}
		m = proto.Clone(m)
		txn.Insert(entityKey(k.Name, id), m)
		*puts = append(*puts, m)
		return nil
	case controlv1.Op_ACTION_DELETE:
		k, ok := KindByName(op.GetKind())
		if !ok {
			return invalid("kind", "unknown kind %q", op.GetKind())
		}
		old, exists := txn.Delete(entityKey(k.Name, op.GetId()))
		if !exists {
			return &Error{Code: CodeNotFound, Field: "id", Message: fmt.Sprintf("%s %q does not exist", k.Name, op.GetId())}
		}
		if key, ok := old.(*controlv1.Key); ok {
			txn.Delete(hashKey(key.GetHash()))
		}
		deleted[k.Name+"/"+op.GetId()] = true
		return nil
	}
	return invalid("action", "unknown action %d", op.GetAction())
}
