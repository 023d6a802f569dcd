package usage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// appendRecord appends r's protobuf encoding to b, as proto.Marshal
// would (fields in number order, zero values left out), in one pass: it
// runs on the request's path, where proto.Marshal's size pass and
// reflection cost a few hundred nanoseconds more. Every field of
// usagev1.Record must be written here; TestAppendRecordWritesEveryField
// fails when one is added to the schema and not to this function.
func appendRecord(b []byte, r *usagev1.Record) []byte {
	b = appendUint(b, 1, uint64(r.Schema))
	b = appendString(b, 2, r.RequestId)
	b = appendString(b, 3, r.Tenant)
	b = appendString(b, 4, r.Key)
	b = appendString(b, 5, r.Model)
	b = appendString(b, 6, r.Target)
	b = appendString(b, 7, r.TargetKind)
	b = appendString(b, 8, r.Node)
	b = appendString(b, 9, r.Region)
	b = appendString(b, 10, r.Via)
	b = appendUint(b, 11, r.TokensIn)
	b = appendUint(b, 12, r.TokensOut)
	b = appendUint(b, 13, uint64(r.CostNanoUsd))
	b = appendUint(b, 14, uint64(r.Status))
	b = appendUint(b, 15, r.LatencyUs)
	b = appendUint(b, 16, uint64(r.UnixMs))
	b = appendBool(b, 17, r.Stream)
	b = appendBool(b, 18, r.Interrupted)
	b = appendUint(b, 19, r.Revision)
	b = appendBool(b, 20, r.Cached)
	if r.Epoch != 0 {
		b = protowire.AppendTag(b, 30, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, r.Epoch)
	}
	b = appendUint(b, 31, r.Seq)
	return b
}

// recordBound is at least the length of r's encoding: every string with
// its tag and length, and the largest varint for each other field.
func recordBound(r *usagev1.Record) int {
	const strings, others = 9, 13
	return strings*(2+protowire.SizeVarint(maxFrame)) + others*(2+10) +
		len(r.RequestId) + len(r.Tenant) + len(r.Key) + len(r.Model) + len(r.Target) +
		len(r.TargetKind) + len(r.Node) + len(r.Region) + len(r.Via)
}

func appendString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendUint(b []byte, n protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBool(b []byte, n protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// appendRecordFrame appends r's frame (as appendFrame frames a payload)
// to b, encoding r in place.
func appendRecordFrame(b []byte, r *usagev1.Record) []byte {
	at := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = appendRecord(b, r)
	p := b[at+frameHeader:]
	binary.LittleEndian.PutUint32(b[at:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[at+4:], crc32.Checksum(p, castagnoli))
	return b
}

// pend is a spooled record waiting for JetStream's ack: its encoding,
// sent as it is, and its request ID, the message ID.
type pend struct {
	id      string
	payload []byte
}

// pendOf reads a record's request ID from its encoding, checking that
// the encoding is well formed and has one.
func pendOf(p []byte) (pend, error) {
	var id string
	for b := p; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return pend{}, fmt.Errorf("usage: record: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			v, m := protowire.ConsumeString(b)
			if m < 0 {
				return pend{}, fmt.Errorf("usage: record's request ID: %w", protowire.ParseError(m))
			}
			id, b = v, b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return pend{}, fmt.Errorf("usage: record field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	if id == "" {
		return pend{}, errors.New("usage: record without a request ID")
	}
	return pend{id: id, payload: p}, nil
}

// pendsOf returns the pending records of frames, which the recorder
// wrote itself (and so never holds a record pendOf refuses: one it
// does is left out).
func pendsOf(frames []byte) []pend {
	payloads, _, _ := readFrames(frames)
	out := make([]pend, 0, len(payloads))
	for _, p := range payloads {
		if pd, err := pendOf(p); err == nil {
			out = append(out, pd)
		}
	}
	return out
}
