// Package tablewire is the routing table's wire form, shared by the
// control plane, which compiles and publishes it, and the edge, which
// receives it: deterministic encoding, decoding with a size cap,
// validation, deltas between revisions, and conversion into the edge's
// shared/table.Table.
//
// Tables and the entity messages inside them are immutable once built or
// decoded: deltas share unchanged entities between revisions. This
// package does no I/O beyond the secret resolver it is handed and the
// table cache file (cache.go) its callers name, and it
// must never put a provider's secret_ref or credential into an error
// message or a log.
package tablewire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
)

// Schema is the capability version this code speaks; proto/table/v1
// lists its history.
const Schema = 1

// DefaultMaxBytes is the default cap on an encoded table or update, in
// bytes. A thousand routes take about 100 KiB.
const DefaultMaxBytes = 4 << 20

// Errors. Every decoding and validation failure wraps one of them.
var (
	// ErrTooLarge: the encoded message is above the size cap.
	ErrTooLarge = errors.New("table too large")
	// ErrDecode: the bytes are not a valid protobuf message.
	ErrDecode = errors.New("table does not decode")
	// ErrSchema: the message needs a newer capability version.
	ErrSchema = errors.New("table schema not supported")
	// ErrInvalid: the table decodes but is inconsistent.
	ErrInvalid = errors.New("invalid table")
	// ErrGap: a delta does not start at the table's revision.
	ErrGap = errors.New("delta does not follow the table's revision")
)

// Encode marshals a table message deterministically. Callers sort the
// table's lists (Sort) first; the compiler and ApplyDelta do.
func Encode(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func checkSchema(s uint32) error {
	if s == 0 || s > Schema {
		return fmt.Errorf("%w: schema %d, this node speaks %d", ErrSchema, s, Schema)
	}
	return nil
}

func unmarshal(b []byte, max int, m proto.Message) error {
	if max <= 0 {
		max = DefaultMaxBytes
	}
	if len(b) > max {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, len(b), max)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	return nil
}

// Decode reads a full table of at most max bytes (0: DefaultMaxBytes) and
// validates it.
func Decode(b []byte, max int) (*tablev1.RoutingTable, error) {
	t := &tablev1.RoutingTable{}
	if err := unmarshal(b, max, t); err != nil {
		return nil, err
	}
	if err := Validate(t); err != nil {
		return nil, err
	}
	return t, nil
}

// DecodeUpdate reads a published update of at most max bytes. A full
// table in it is validated; a delta is checked only for its schema, since
// it is validated once applied.
func DecodeUpdate(b []byte, max int) (*tablev1.TableUpdate, error) {
	u := &tablev1.TableUpdate{}
	if err := unmarshal(b, max, u); err != nil {
		return nil, err
	}
	switch {
	case u.GetFull() != nil:
		if err := Validate(u.GetFull()); err != nil {
			return nil, err
		}
	case u.GetDelta() != nil:
		if err := checkSchema(u.GetDelta().GetSchema()); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: update carries neither a delta nor a table", ErrDecode)
	}
	return u, nil
}

// Size returns a message's encoded size in bytes.
func Size(m proto.Message) int { return proto.MarshalOptions{Deterministic: true}.Size(m) }
