package fsm

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

var hashA = "sha256:" + strings.Repeat("a", 64)

func write(t *testing.T, f *FSM, index uint64, reqID string, ops ...*controlv1.Op) *controlv1.Result {
	t.Helper()
	b, err := Encode(TypeWrite, &controlv1.Write{RequestId: reqID, Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(index, b)
}

func fleet() []*controlv1.Op {
	return []*controlv1.Op{
		PutOp(&controlv1.Region{Id: "eu", Name: "Europe", Latitude: 50, Longitude: 8}),
		PutOp(&controlv1.Node{Id: "n1", Region: "eu", Addresses: []string{"10.0.0.1:8080"}}),
		PutOp(&controlv1.Model{Id: "llama3", Local: true, Ollama: "llama3.1:8b"}),
		PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OPENAI_API_KEY"}),
		// Listed before its tenant: references are checked at the end.
		PutOp(&controlv1.Key{Id: "k1", Hash: hashA, Tenant: "acme"}),
		PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 100}),
		PutOp(&controlv1.Route{Model: "llama3", Targets: []*controlv1.Target{{Provider: "oai"}}, AllowedRegions: []string{"eu"}}),
		PutOp(&controlv1.Placement{Id: "p1", Model: "llama3", Region: "eu", Desired: 2}),
		PutOp(&controlv1.Price{Model: "llama3", Provider: "oai", Input: 0.1, Output: 0.2}),
	}
}

func TestWriteAppliesAtomicallyAndChecksReferences(t *testing.T) {
	f := New(Config{})
	if r := write(t, f, 1, "r1", fleet()...); r.GetCode() != "" {
		t.Fatalf("fleet rejected: %v", r)
	}
	for _, k := range Kinds {
		if f.State().Count(k.Name) != 1 {
			t.Errorf("%s: %d entities, want 1", k.Name, f.State().Count(k.Name))
		}
	}
	cases := []struct {
		name  string
		ops   []*controlv1.Op
		code  string
		field string
	}{
		{"dangling region", []*controlv1.Op{PutOp(&controlv1.Node{Id: "n2", Region: "mars"})}, CodeReference, "region"},
		{"latitude 200", []*controlv1.Op{PutOp(&controlv1.Region{Id: "x", Latitude: 200})}, CodeInvalid, "latitude"},
		{"duplicate key hash", []*controlv1.Op{PutOp(&controlv1.Key{Id: "k2", Hash: hashA})}, CodeConflict, "hash"},
		{"create existing", []*controlv1.Op{CreateOp(&controlv1.Region{Id: "eu"})}, CodeConflict, "id"},
		{"delete referenced", []*controlv1.Op{DeleteOp(KindRegion, "eu")}, CodeConflict, "id"},
		{"delete missing", []*controlv1.Op{DeleteOp(KindRegion, "nope")}, CodeNotFound, "id"},
		{"secret in ref", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "openai", SecretRef: "sk-123"})}, CodeInvalid, "secret_ref"},
		{"unknown preset", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "nope"})}, CodeInvalid, "preset"},
		{"bedrock without region", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "bedrock", CloudRegion: "us-east-1"})}, CodeInvalid, "region"},
		{"vertex without project", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "vertex", Region: "eu", CloudRegion: "europe-west4"})}, CodeInvalid, "project"},
		{"api_version on openai", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "openai", ApiVersion: "2024-10-21"})}, CodeInvalid, "api_version"},
		{"bedrock in a region nobody declared", []*controlv1.Op{PutOp(&controlv1.Provider{Id: "p", Preset: "bedrock", Region: "mars", CloudRegion: "us-east-1"})}, CodeReference, "region"},
		{"placement of remote model", []*controlv1.Op{
			PutOp(&controlv1.Model{Id: "remote"}),
			PutOp(&controlv1.Placement{Id: "p2", Model: "remote", Node: "n1", Desired: 1}),
		}, CodeReference, "model"},
		// The first op alone would succeed; the write must leave no trace.
		{"all or none", []*controlv1.Op{
			PutOp(&controlv1.Region{Id: "us"}),
			PutOp(&controlv1.Node{Id: "n3", Region: "nowhere"}),
		}, CodeReference, "region"},
	}
	for i, c := range cases {
		r := write(t, f, uint64(10+i), "c"+c.name, c.ops...)
		if r.GetCode() != c.code || r.GetField() != c.field {
			t.Errorf("%s: got code %q field %q (%s), want %q %q", c.name, r.GetCode(), r.GetField(), r.GetMessage(), c.code, c.field)
		}
	}
	if _, ok := f.State().Get(KindRegion, "us"); ok {
		t.Error("a rejected write left a region behind")
	}
	if f.State().Index() != 1 {
		t.Errorf("index %d after rejected writes, want 1", f.State().Index())
	}
	// Deleting the route, placement, price and then the model in one
	// write succeeds, in any order.
	r := write(t, f, 30, "del", DeleteOp(KindModel, "llama3"), DeleteOp(KindRoute, "llama3"),
		DeleteOp(KindPlacement, "p1"), DeleteOp(KindPrice, "oai/llama3"))
	if r.GetCode() != "" {
		t.Fatalf("delete: %v", r)
	}
	if !errors.Is(ResultError(&controlv1.Result{Code: CodeReference}), ErrReference) {
		t.Error("ResultError does not match its sentinel")
	}
}

func TestRetriedRequestAppliesOnce(t *testing.T) {
	var applied []string
	f := New(Config{OnApply: func(_ uint64, id string) { applied = append(applied, id) }})
	r1 := write(t, f, 1, "same", PutOp(&controlv1.Region{Id: "eu"}))
	// The retry carries a different body; the first outcome stands.
	r2 := write(t, f, 2, "same", CreateOp(&controlv1.Region{Id: "eu"}))
	if !proto.Equal(r1, r2) || r2.GetIndex() != 1 {
		t.Fatalf("retry got %v, want the first result %v", r2, r1)
	}
	if len(applied) != 1 {
		t.Fatalf("applied %d times", len(applied))
	}
}

func TestDedupWindowIsBounded(t *testing.T) {
	f := New(Config{})
	for i := range DedupWindow + 10 {
		write(t, f, uint64(i+1), "r"+strconv.Itoa(i), PutOp(&controlv1.Region{Id: "eu"}))
	}
	n := 0
	f.State().tree.Root().WalkPrefix([]byte("d/"), func([]byte, any) bool { n++; return false })
	if n != DedupWindow {
		t.Fatalf("%d dedup records, want %d", n, DedupWindow)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := New(Config{})
	write(t, f, 1, "r1", fleet()...)
	b, _ := Encode(TypeSetMember, &controlv1.SetMember{RequestId: "m", Member: &controlv1.Member{Id: "a", RaftAddr: "x:1", ApiAddr: "x:2"}})
	f.Apply(2, b)
	var buf bytes.Buffer
	if _, err := f.State().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(Config{})
	write(t, g, 1, "junk", PutOp(&controlv1.Region{Id: "junk"}))
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if !g.State().Equal(f.State()) || g.State().Index() != 2 {
		t.Fatal("restored state differs")
	}
	if _, ok := g.State().Result("r1"); !ok {
		t.Fatal("restore lost the dedup record")
	}
	if _, ok := g.State().KeyByHash(hashA); !ok {
		t.Fatal("restore lost the hash index")
	}
	if err := g.Restore(strings.NewReader("not a snapshot at all")); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("bad snapshot: %v", err)
	}
}

func TestUnknownCommandTypes(t *testing.T) {
	f := New(Config{})
	if r := f.Apply(1, []byte{byte(IgnoreUnknown | 5), 1, 2}); r.GetCode() != "" {
		t.Fatalf("ignorable command: %v", r)
	}
	if r := f.Apply(2, []byte{5}); r.GetCode() != CodeHalted {
		t.Fatalf("an unknown command without the ignore bit: %v, want code %q", r, CodeHalted)
	}
	if f.Halted() == nil {
		t.Fatal("an unknown command without the ignore bit did not halt the replica")
	}
}

// A log entry whose body does not decode halts the replica instead of
// panicking (a poison pill for every replica), and nothing after it
// applies: applying past it would diverge from the others.
func TestCorruptEntryHaltsWithoutPanic(t *testing.T) {
	f := New(Config{})
	write(t, f, 1, "r1", PutOp(&controlv1.Region{Id: "eu"}))
	w := f.Watch()
	r := f.Apply(2, []byte{byte(TypeWrite), 0xff, 0xff, 0xff})
	if r.GetCode() != CodeHalted || f.Halted() == nil {
		t.Fatalf("corrupt entry: %v, halted %v", r, f.Halted())
	}
	select {
	case <-w:
	default:
		t.Fatal("watchers not woken by the halt")
	}
	var h *HaltError
	if !errors.As(f.Halted(), &h) || h.Index != 2 || !errors.Is(f.Halted(), ErrMalformed) {
		t.Fatalf("halt reason %v", f.Halted())
	}
	if r := write(t, f, 3, "r3", PutOp(&controlv1.Region{Id: "us"})); r.GetCode() != CodeHalted {
		t.Fatalf("a halted replica applied entry 3: %v", r)
	}
	if _, ok := f.State().Get(KindRegion, "us"); ok || f.State().Index() != 1 {
		t.Fatal("a halted replica changed its state")
	}
}

func TestIdentityIsSetOnceAndSnapshotted(t *testing.T) {
	f := New(Config{})
	pub := bytes.Repeat([]byte{1}, 32)
	set := func(idx uint64, cluster string) *controlv1.Result {
		b, _ := Encode(TypeSetIdentity, &controlv1.SetIdentity{RequestId: cluster,
			Identity: &controlv1.ClusterIdentity{ClusterId: cluster, PublicKey: pub, SealedPrivateKey: []byte{0, 1}}})
		return f.Apply(idx, b)
	}
	if r := set(1, "c1"); r.GetCode() != "" {
		t.Fatal(r)
	}
	if r := set(2, "c2"); r.GetCode() != "" {
		t.Fatal(r)
	}
	if got := f.State().Identity().GetClusterId(); got != "c1" {
		t.Fatalf("cluster %q after a second SetIdentity, want the first", got)
	}
	var buf bytes.Buffer
	f.State().WriteTo(&buf)
	st, err := ReadState(&buf)
	if err != nil || st.Identity().GetClusterId() != "c1" {
		t.Fatalf("snapshot lost the identity: %v", err)
	}
}

func TestWatchClosesOnApply(t *testing.T) {
	f := New(Config{})
	w := f.Watch()
	write(t, f, 1, "r", PutOp(&controlv1.Region{Id: "eu"}))
	select {
	case <-w:
	default:
		t.Fatal("watch not closed by an apply")
	}
}

// FuzzDecode feeds arbitrary commands to Decode and Apply: either the
// command is rejected as malformed or unknown, or it applies without
// panicking.
func FuzzDecode(f *testing.F) {
	b, _ := Encode(TypeWrite, &controlv1.Write{RequestId: "r", Ops: fleet()})
	f.Add(b)
	b, _ = Encode(TypeSetMember, &controlv1.SetMember{RequestId: "m", Member: &controlv1.Member{Id: "a", RaftAddr: "x:1"}})
	f.Add(b)
	f.Add([]byte{byte(TypeRemoveMember)})
	f.Add([]byte{200, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, msg, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrIgnorable) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		fsm := New(Config{})
		r := fsm.Apply(1, data)
		if r.GetCode() == "" && RequestID(msg) != "" {
			if _, ok := fsm.State().Result(RequestID(msg)); !ok {
				t.Fatal("applied without a dedup record")
			}
		}
		var buf bytes.Buffer
		if _, err := fsm.State().WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		g := New(Config{})
		if err := g.Restore(&buf); err != nil || !g.State().Equal(fsm.State()) {
			t.Fatalf("snapshot round trip: %v", err)
		}
	})
}
