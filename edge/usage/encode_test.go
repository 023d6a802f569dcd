package usage

import (
	"testing"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// full returns a record with every field of the schema set to a value
// that is not its zero, by reflection, so a field added to usagev1.Record
// is set here without anyone remembering to.
func full(t *testing.T, seed uint64) *usagev1.Record {
	t.Helper()
	r := &usagev1.Record{}
	m := r.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		n := seed + uint64(f.Number())*1_000_003
		switch f.Kind() {
		case protoreflect.StringKind:
			m.Set(f, protoreflect.ValueOfString("s-é-"+string(rune('a'+f.Number()))+string(make([]byte, n%7))))
		case protoreflect.BoolKind:
			m.Set(f, protoreflect.ValueOfBool(true))
		case protoreflect.Uint32Kind:
			m.Set(f, protoreflect.ValueOfUint32(uint32(n)))
		case protoreflect.Uint64Kind:
			m.Set(f, protoreflect.ValueOfUint64(n<<20))
		case protoreflect.Fixed64Kind:
			m.Set(f, protoreflect.ValueOfUint64(n<<30))
		case protoreflect.Int64Kind:
			m.Set(f, protoreflect.ValueOfInt64(int64(n<<18)))
		default:
			t.Fatalf("field %s has kind %v, which appendRecord does not know", f.Name(), f.Kind())
		}
	}
	return r
}

// TestAppendRecordWritesEveryField decodes appendRecord's bytes with the
// generated code: a field left out, or written wrongly, shows.
func TestAppendRecordWritesEveryField(t *testing.T) {
	for _, r := range []*usagev1.Record{full(t, 1), full(t, 1<<40), {}, {RequestId: "only"}} {
		b := appendRecord(nil, r)
		if len(b) > recordBound(r) {
			t.Fatalf("encoding is %d bytes, above its bound %d", len(b), recordBound(r))
		}
		var got usagev1.Record
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, r) {
			t.Fatalf("round trip lost fields:\n got %v\nwant %v", &got, r)
		}
		if want, _ := proto.Marshal(r); len(want) != len(b) {
			t.Fatalf("encoding is %d bytes, proto.Marshal's %d", len(b), len(want))
		}
	}
}

// FuzzPendOf: pendOf never panics, and agrees with the generated code on
// every encoding that holds a request ID.
func FuzzPendOf(f *testing.F) {
	f.Add(appendRecord(nil, &usagev1.Record{RequestId: "r1", Tenant: "t", TokensIn: 3, Stream: true}))
	f.Add([]byte{0x12, 0x02, 'i', 'd'})
	f.Add([]byte{0x12, 0x05, 'i'})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		pd, err := pendOf(b)
		var rec usagev1.Record
		if proto.Unmarshal(b, &rec) == nil && rec.GetRequestId() != "" {
			if err != nil || pd.id != rec.GetRequestId() {
				t.Fatalf("pendOf = %q, %v; proto says %q", pd.id, err, rec.GetRequestId())
			}
		}
		if err == nil && pd.id == "" {
			t.Fatal("pendOf accepted a record without a request ID")
		}
	})
}
