package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// Type is a command's first byte: it says which message the rest holds.
type Type byte

// Command types. Values are never reused; a retired type is listed here as
// a comment. Bit 128 (IgnoreUnknown) marks a type that a node which does
// not know it may skip; every other unknown type stops the node.
const (
	// TypeWrite is a Write: entity puts and deletes, applied atomically.
	TypeWrite Type = 1
	// TypeSetMember is a SetMember: a control node's addresses.
	TypeSetMember Type = 2
	// TypeRemoveMember is a RemoveMember.
	TypeRemoveMember Type = 3
	// TypeSetIdentity is a SetIdentity: the cluster ID and the
	// table-signing key, created once by the first leader.
	TypeSetIdentity Type = 4

	// IgnoreUnknown is the "ignore if unknown" bit.
	IgnoreUnknown Type = 128
)

// Errors returned by Decode.
var (
	// ErrUnknownType is an unknown type without the IgnoreUnknown bit. A
	// node that applied past it would diverge from newer nodes.
	ErrUnknownType = errors.New("unknown command type")
	// ErrIgnorable is an unknown type with the IgnoreUnknown bit set.
	ErrIgnorable = errors.New("unknown command type marked ignore-if-unknown")
	// ErrMalformed is a command whose body does not decode.
	ErrMalformed = errors.New("malformed command")
)

// Encode returns the type byte followed by msg's protobuf encoding.
func Encode(t Type, msg proto.Message) ([]byte, error) {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode command type %d: %w", t, err)
	}
	out := make([]byte, 1+len(body))
	out[0] = byte(t)
	copy(out[1:], body)
	return out, nil
}

// Decode splits a command into its type and message. The message is one
// of *Write, *SetMember or *RemoveMember from proto/control/v1.
func Decode(b []byte) (Type, proto.Message, error) {
	if len(b) == 0 {
		return 0, nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	t := Type(b[0])
	var msg proto.Message
	switch t {
	case TypeWrite:
		msg = &controlv1.Write{}
	case TypeSetMember:
		msg = &controlv1.SetMember{}
	case TypeRemoveMember:
		msg = &controlv1.RemoveMember{}
	case TypeSetClusterCA:
		msg = &controlv1.SetClusterCA{}
	case TypeCreateJoinToken:
		msg = &controlv1.CreateJoinToken{}
	case TypeRedeemJoinToken:
		msg = &controlv1.RedeemJoinToken{}
	case TypeRevokeNode:
		msg = &controlv1.RevokeNode{}
	case TypeSetIdentity:
		msg = &controlv1.SetIdentity{}
	case TypeUsageBatch:
		msg = &controlv1.UsageBatch{}
	default:
		if t&IgnoreUnknown != 0 {
			return t, nil, fmt.Errorf("%w: %d", ErrIgnorable, t)
		}
		return t, nil, fmt.Errorf("%w: %d", ErrUnknownType, t)
	}
	if err := proto.Unmarshal(b[1:], msg); err != nil {
		return t, nil, fmt.Errorf("%w: type %d: %v", ErrMalformed, t, err)
	}
	return t, msg, nil
}

// RequestID returns the request ID a decoded command carries.
func RequestID(msg proto.Message) string {
	switch m := msg.(type) {
	case *controlv1.Write:
		return m.GetRequestId()
	case *controlv1.SetMember:
		return m.GetRequestId()
	case *controlv1.RemoveMember:
		return m.GetRequestId()
	case *controlv1.SetClusterCA:
		return m.GetRequestId()
	case *controlv1.CreateJoinToken:
		return m.GetRequestId()
	case *controlv1.RedeemJoinToken:
		return m.GetRequestId()
	case *controlv1.RevokeNode:
		return m.GetRequestId()
	case *controlv1.SetIdentity:
		return m.GetRequestId()
	}
	return ""
}
