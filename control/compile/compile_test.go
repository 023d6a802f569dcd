package compile

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"google.golang.org/protobuf/proto"
)

func apply(t *testing.T, f *fsm.FSM, index uint64, ops ...*controlv1.Op) {
	t.Helper()
	b, err := fsm.Encode(fsm.TypeWrite, &controlv1.Write{RequestId: fmt.Sprint("r", index), Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.Apply(index, b); r.GetCode() != "" {
		t.Fatalf("write %d rejected: %v", index, r)
	}
}

func fleet() []*controlv1.Op {
	return []*controlv1.Op{
		fsm.PutOp(&controlv1.Region{Id: "eu", Name: "Europe", Latitude: 50, Longitude: 8}),
		fsm.PutOp(&controlv1.Node{Id: "n1", Region: "eu", Addresses: []string{"10.0.0.1:8080"}, Labels: map[string]string{"a": "1", "b": "2", "c": "3"}}),
		fsm.PutOp(&controlv1.Model{Id: "llama3", Local: true, Ollama: "llama3.1:8b"}),
		fsm.PutOp(&controlv1.Model{Id: "gpt-4o"}),
		fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OPENAI_API_KEY"}),
		fsm.PutOp(&controlv1.Provider{Id: "local", Kind: "local"}),
		fsm.PutOp(&controlv1.Key{Id: "k1", Hash: "sha256:" + strings.Repeat("a", 64), Tenant: "acme"}),
		fsm.PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 100}),
		fsm.PutOp(&controlv1.Route{Model: "gpt-4o", Targets: []*controlv1.Target{{Provider: "oai"}}}),
		fsm.PutOp(&controlv1.Route{Model: "llama3", Targets: []*controlv1.Target{{Provider: "local"}}, Fallbacks: []*controlv1.Target{{Provider: "oai", Model: "gpt-4o"}}}),
		fsm.PutOp(&controlv1.Placement{Id: "p1", Model: "llama3", Region: "eu", Desired: 2}),
		fsm.PutOp(&controlv1.Price{Model: "gpt-4o", Provider: "oai", Input: 2.5, Output: 10}),
	}
}

func TestCompileIsDeterministicAndComplete(t *testing.T) {
	f := fsm.New(fsm.Config{})
	apply(t, f, 3, fleet()...)
	a, err := Compile(DefaultConfig(), f.State())
	if err != nil {
		t.Fatal(err)
	}
	if a.Table.GetRevision() != 3 {
		t.Fatalf("revision %d, want the Raft index 3", a.Table.GetRevision())
	}
	e := a.Table.GetEntities()
	if len(e.Regions) != 1 || len(e.Nodes) != 1 || len(e.Models) != 2 || len(e.Placements) != 1 || len(e.Providers) != 2 ||
		len(e.Routes) != 2 || len(e.Keys) != 1 || len(e.Tenants) != 1 || len(e.Prices) != 1 {
		t.Fatalf("entities missing: %v", e)
	}
	for range 10 {
		b, err := Compile(DefaultConfig(), f.State())
		if err != nil || string(b.Bytes) != string(a.Bytes) {
			t.Fatalf("same state, different bytes (%v)", err)
		}
	}
	// A replica that applied the same writes compiles the same bytes.
	g := fsm.New(fsm.Config{})
	apply(t, g, 3, fleet()...)
	if b, _ := Compile(DefaultConfig(), g.State()); string(b.Bytes) != string(a.Bytes) {
		t.Fatal("replicas compile different bytes")
	}
	got, err := tablewire.Decode(a.Bytes, 0)
	if err != nil || !Equal(got, a.Table) {
		t.Fatalf("decode: %v", err)
	}
	if strings.Contains(fmt.Sprint(a.Table), "OPENAI_API_KEY") == false {
		t.Fatal("the table carries the secret_ref for edges to resolve")
	}
}

func TestCompileRejects(t *testing.T) {
	f := fsm.New(fsm.Config{})
	apply(t, f, 3, fleet()...)
	// The FSM accepts a route whose only target is the local engine for
	// a model placed nowhere; the compiler does not.
	apply(t, f, 4, fsm.PutOp(&controlv1.Model{Id: "orphan", Local: true, Ollama: "orphan:1b"}),
		fsm.PutOp(&controlv1.Route{Model: "orphan", Targets: []*controlv1.Target{{Provider: "local"}}}))
	_, err := Compile(DefaultConfig(), f.State())
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "routes[orphan]") || !strings.Contains(err.Error(), "revision 4") {
		t.Fatalf("unplaced local target: %v", err)
	}
	apply(t, f, 5, fsm.DeleteOp(fsm.KindRoute, "orphan"))
	if _, err := Compile(DefaultConfig(), f.State()); err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(Config{MaxBytes: 100}, f.State()); !errors.Is(err, tablewire.ErrTooLarge) {
		t.Fatalf("size cap: %v", err)
	}
}

func BenchmarkCompile1000Routes(b *testing.B) {
	f := fsm.New(fsm.Config{})
	ops := []*controlv1.Op{fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_K"})}
	for i := range 1000 {
		id := fmt.Sprintf("m%04d", i)
		ops = append(ops, fsm.PutOp(&controlv1.Model{Id: id}), fsm.PutOp(&controlv1.Route{Model: id, Targets: []*controlv1.Target{{Provider: "oai"}}}))
	}
	bb, _ := fsm.Encode(fsm.TypeWrite, &controlv1.Write{RequestId: "r", Ops: ops})
	f.Apply(1, bb)
	b.ResetTimer()
	for range b.N {
		if _, err := Compile(DefaultConfig(), f.State()); err != nil {
			b.Fatal(err)
		}
	}
}

// A state that reached the FSM with a secret_ref out of bounds (written
// before the bounds, or through another API) never becomes a table.
func TestSecretRefOutOfBoundsRejected(t *testing.T) {
	tab := &tablev1.RoutingTable{Schema: tablewire.Schema, Revision: 3, Entities: &tablev1.Entities{
		Providers: []*controlv1.Provider{{Id: "evil", Preset: "openai", SecretRef: "env:HOME"}},
		Models:    []*controlv1.Model{{Id: "m"}},
		Routes:    []*controlv1.Route{{Model: "m", Targets: []*controlv1.Target{{Provider: "evil"}}}},
	}}
	if _, err := Check(DefaultConfig(), tab); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "providers[evil].secret_ref") {
		t.Fatalf("env:HOME: %v", err)
	}
	tab.Entities.Providers[0].SecretRef = "env:MERIDIAN_SECRET_OPENAI"
	if _, err := Check(DefaultConfig(), tab); err != nil {
		t.Fatalf("in bounds: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Secrets.EnvPrefix = "ACME_"
	if _, err := Check(cfg, tab); err == nil {
		t.Fatal("a custom prefix did not apply")
	}
}

func TestExhaustedTenantReachesTheTable(t *testing.T) {
	f := fsm.New(fsm.Config{})
	ops := fleet()
	ops[7] = fsm.PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 0.000001, HardLimit: true, BudgetPeriod: "day"}) // 1000 nano-USD
	apply(t, f, 3, ops...)
	before, err := Compile(DefaultConfig(), f.State())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b, _ := fsm.Encode(fsm.TypeUsageBatch, &controlv1.UsageBatch{NowUnixMs: now.UnixMilli(), Records: []*controlv1.UsageRecord{
		{RequestId: "r1", Tenant: "acme", Key: "k1", Model: "gpt-4o", CostNanoUsd: 1000, UnixMs: now.UnixMilli()}}})
	if r := f.Apply(4, b); r.GetCode() != "" {
		t.Fatal(r)
	}
	after, err := Compile(DefaultConfig(), f.State())
	if err != nil {
		t.Fatal(err)
	}
	ts := after.Table.GetEntities().GetTenantStates()
	until := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	if after.Table.GetRevision() != 4 || len(ts) != 1 || !ts[0].GetExhausted() || ts[0].GetExhaustedUntilUnixMs() != until.UnixMilli() {
		t.Fatalf("revision %d, tenant states %v", after.Table.GetRevision(), ts)
	}
	tn := after.Edge.Table().Tenants
	if len(tn) != 1 || !tn[0].Exhausted || !tn[0].ExhaustedUntil.Equal(until) {
		t.Fatalf("edge tenants %+v", tn)
	}
	// A delta carries it, and applies to the same table.
	d := tablewire.Diff(before.Table, after.Table)
	if len(d.GetUpserts().GetTenantStates()) != 1 {
		t.Fatalf("delta upserts %v", d.GetUpserts())
	}
	got, err := tablewire.ApplyDelta(before.Table, d)
	if err != nil || !Equal(got, after.Table) {
		t.Fatalf("delta applies to %v, %v", got, err)
	}
	// The tenant's deletion drops its state from the table.
	apply(t, f, 5, fsm.DeleteOp(fsm.KindKey, "k1"), fsm.DeleteOp(fsm.KindTenant, "acme"))
	gone, err := Compile(DefaultConfig(), f.State())
	if err != nil || len(gone.Table.GetEntities().GetTenantStates()) != 0 {
		t.Fatalf("after delete: %v %v", err, gone.Table.GetEntities().GetTenantStates())
	}
	if d := tablewire.Diff(after.Table, gone.Table); len(d.GetDeletes().GetTenantStates()) != 1 {
		t.Fatalf("delete delta %v", d.GetDeletes())
	}
}

// A joined node's NATS key travels in the table (regional leaves admit
// edges by it); a revoked node's does not, and no write may set one.
func TestCompileCarriesJoinedNodesNATSKeys(t *testing.T) {
	const natsKey = "UCXF2TPTH2IA6ZT6ZPO6HMJPOIWCUFQQOFWH5XU6HG4ZW3XJK3WGBSTO"
	f := fsm.New(fsm.Config{})
	apply(t, f, 1, fleet()...)
	cmd := func(index uint64, typ fsm.Type, msg proto.Message) {
		t.Helper()
		b, err := fsm.Encode(typ, msg)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(index, b); r.GetCode() != "" {
			t.Fatalf("command %d: %v", index, r)
		}
	}
	h := fsm.HashToken("tok")
	cmd(2, fsm.TypeCreateJoinToken, &controlv1.CreateJoinToken{RequestId: "c", NowUnixMs: 1000,
		Token: &controlv1.JoinToken{Hash: h, Node: "n1", ExpiresUnixMs: 5000}})
	cmd(3, fsm.TypeRedeemJoinToken, &controlv1.RedeemJoinToken{RequestId: "r", Hash: h, NatsKey: natsKey, NowUnixMs: 2000})
	key := func() string {
		tab, err := Compile(DefaultConfig(), f.State())
		if err != nil {
			t.Fatal(err)
		}
		return tab.Table.GetEntities().GetNodes()[0].GetNatsKey()
	}
	if got := key(); got != natsKey {
		t.Fatalf("joined node's nats_key = %q, want %q", got, natsKey)
	}
	cmd(4, fsm.TypeRevokeNode, &controlv1.RevokeNode{RequestId: "v", Node: "n1", NowUnixMs: 3000})
	if got := key(); got != "" {
		t.Fatalf("revoked node's nats_key = %q, want none", got)
	}
	b, _ := fsm.Encode(fsm.TypeWrite, &controlv1.Write{RequestId: "w", Ops: []*controlv1.Op{
		fsm.PutOp(&controlv1.Node{Id: "n2", Region: "eu", NatsKey: natsKey})}})
	if r := f.Apply(5, b); r.GetCode() == "" || !strings.Contains(r.GetMessage()+r.GetField(), "nats_key") {
		t.Fatalf("a write setting nats_key: %v, want refused naming nats_key", r)
	}
}
