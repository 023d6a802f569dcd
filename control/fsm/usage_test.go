package fsm

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

func usage(t *testing.T, f *FSM, index uint64, now time.Time, recs ...*controlv1.UsageRecord) UsageResult {
	t.Helper()
	b, err := Encode(TypeUsageBatch, &controlv1.UsageBatch{NowUnixMs: now.UnixMilli(), Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(index, b)
	if res.GetCode() != "" {
		t.Fatalf("usage batch: %s %s", res.GetCode(), res.GetMessage())
	}
	r, ok := ParseUsageResult(res.GetMessage())
	if !ok {
		t.Fatalf("usage result %q does not parse", res.GetMessage())
	}
	return r
}

func rec(id, tenant, model string, at time.Time, in, out uint64, cost int64) *controlv1.UsageRecord {
	return &controlv1.UsageRecord{RequestId: id, Tenant: tenant, Key: "k1", Model: model, TokensIn: in, TokensOut: out,
		CostNanoUsd: cost, UnixMs: at.UnixMilli()}
}

func totals(s *State, tenant string) (n, in, out uint64, cost int64) {
	s.UsageTotals(tenant, func(u *controlv1.UsageTotal) bool {
		n += u.GetRequests()
		in += u.GetTokensIn()
		out += u.GetTokensOut()
		cost += u.GetCostNanoUsd()
		return true
	})
	return
}

func TestUsageBatchAddsOnceAndDropsMalformed(t *testing.T) {
	f := New(Config{})
	if r := write(t, f, 1, "w1", fleet()...); r.GetCode() != "" {
		t.Fatal(r)
	}
	now := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	r := usage(t, f, 2, now,
		rec("r1", "acme", "llama3", now, 10, 20, 1500),
		rec("r2", "acme", "llama3", now.Add(-time.Hour), 1, 2, 7),
		rec("r1", "acme", "llama3", now, 10, 20, 1500), // the same request again in the batch
		&controlv1.UsageRecord{RequestId: "", Tenant: "acme", UnixMs: now.UnixMilli()},
		&controlv1.UsageRecord{RequestId: "bad", Tenant: "a\x00b", UnixMs: now.UnixMilli()},
		&controlv1.UsageRecord{RequestId: "neg", Tenant: "acme", CostNanoUsd: -1, UnixMs: now.UnixMilli()},
	)
	if r != (UsageResult{Applied: 2, Duplicate: 1, Malformed: 3}) {
		t.Fatalf("first batch: %+v", r)
	}
	// Redelivered after a leader change: dropped by request ID.
	if r := usage(t, f, 3, now.Add(time.Minute), rec("r2", "acme", "llama3", now, 1, 2, 7), rec("r3", "beta", "m", now, 0, 5, 3)); r.Applied != 1 || r.Duplicate != 1 {
		t.Fatalf("second batch: %+v", r)
	}
	s := f.State()
	if n, in, out, cost := totals(s, "acme"); n != 2 || in != 11 || out != 22 || cost != 1507 {
		t.Fatalf("acme totals: %d requests, %d in, %d out, %d nano-USD", n, in, out, cost)
	}
	hours := 0
	s.UsageTotals("acme", func(*controlv1.UsageTotal) bool { hours++; return true })
	if hours != 2 {
		t.Fatalf("acme has %d hourly totals, want 2", hours)
	}
	if n, _, _, cost := totals(s, ""); n != 3 || cost != 1510 {
		t.Fatalf("all totals: %d requests, %d nano-USD", n, cost)
	}
	// Usage alone makes no new table revision.
	if s.Index() != 1 {
		t.Fatalf("usage moved the state index to %d", s.Index())
	}
}

func TestUsageAppliedIDsArePrunedByBatchTime(t *testing.T) {
	f := New(Config{})
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	usage(t, f, 1, now, rec("old", "", "m", now, 1, 1, 1))
	usage(t, f, 2, now.Add(UsageRetention-time.Minute), rec("mid", "", "m", now, 1, 1, 1))
	if !f.State().UsageApplied("old") {
		t.Fatal("forgot a request ID inside the retention")
	}
	// A batch from a leader with a clock behind does not move time back.
	usage(t, f, 3, now, rec("x", "", "m", now, 1, 1, 1))
	if !f.State().UsageApplied("old") || f.State().UsageNow() != now.Add(UsageRetention-time.Minute).UnixMilli() {
		t.Fatal("an older batch time moved usage time back")
	}
	usage(t, f, 4, now.Add(UsageRetention+time.Minute))
	s := f.State()
	if s.UsageApplied("old") || !s.UsageApplied("mid") {
		t.Fatalf("after retention: old remembered %v, mid remembered %v", s.UsageApplied("old"), s.UsageApplied("mid"))
	}
	if n, _, _, _ := totals(s, ""); n != 3 {
		t.Fatalf("pruning changed the totals: %d requests", n)
	}
}

func TestBudgetExhaustsAndRecoversByPeriod(t *testing.T) {
	f := New(Config{})
	ops := fleet()
	ops[5] = PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 0.000002, HardLimit: true, BudgetPeriod: "day"}) // 2000 nano-USD
	if r := write(t, f, 1, "w1", ops...); r.GetCode() != "" {
		t.Fatal(r)
	}
	now := time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC)
	usage(t, f, 2, now, rec("a", "acme", "llama3", now, 1, 1, 1999))
	if len(f.State().BudgetStates()) != 0 || f.State().Index() != 1 {
		t.Fatal("exhausted below budget")
	}
	usage(t, f, 3, now, rec("b", "acme", "llama3", now, 1, 1, 1))
	bs := f.State().BudgetStates()
	if len(bs) != 1 || bs[0].GetTenant() != "acme" || bs[0].GetSpendNanoUsd() != 2000 ||
		bs[0].GetUntilUnixMs() != time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixMilli() {
		t.Fatalf("budget states %v", bs)
	}
	if f.State().Index() != 3 {
		t.Fatalf("exhaustion did not make a new revision: index %d", f.State().Index())
	}
	// More spend in the same period changes nothing edges see.
	usage(t, f, 4, now, rec("c", "acme", "llama3", now, 1, 1, 5))
	if f.State().Index() != 3 {
		t.Fatal("more spend in an exhausted period made a new revision")
	}
	if !f.State().BudgetsStale(time.Date(2026, 12, 3, 0, 0, 1, 0, time.UTC).UnixMilli()) {
		t.Fatal("a new period is not reported stale")
	}
	usage(t, f, 5, time.Date(2026, 12, 3, 0, 0, 1, 0, time.UTC))
	if len(f.State().BudgetStates()) != 0 || f.State().Index() != 5 {
		t.Fatalf("still exhausted in a new period: %v", f.State().BudgetStates())
	}
	if f.State().BudgetsStale(time.Date(2026, 12, 3, 0, 0, 2, 0, time.UTC).UnixMilli()) {
		t.Fatal("fresh budget states reported stale")
	}
}

func TestUsageSurvivesSnapshot(t *testing.T) {
	f := New(Config{})
	ops := fleet()
	ops[5] = PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 0.000001, HardLimit: true})
	write(t, f, 1, "w1", ops...)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	usage(t, f, 2, now, rec("a", "acme", "llama3", now, 3, 4, 1000), rec("b", "", "m", now, 1, 1, 2))
	var buf bytes.Buffer
	if _, err := f.State().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(Config{})
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if !g.State().Equal(f.State()) || g.State().UsageNow() != now.UnixMilli() || len(g.State().BudgetStates()) != 1 {
		t.Fatal("restored usage differs")
	}
	// The restored dedup still drops a re-sent record.
	if r := usage(t, g, 3, now, rec("a", "acme", "llama3", now, 3, 4, 1000)); r.Duplicate != 1 {
		t.Fatalf("after restore: %+v", r)
	}
}

func TestKeyAndTenantLimitFields(t *testing.T) {
	f := New(Config{})
	write(t, f, 1, "w1", fleet()...)
	cases := []struct {
		op    *controlv1.Op
		field string
	}{
		{PutOp(&controlv1.Key{Id: "k2", Hash: "sha256:" + strings.Repeat("b", 64), ExpiresAt: "tomorrow"}), "expires_at"},
		{PutOp(&controlv1.Key{Id: "k2", Hash: "sha256:" + strings.Repeat("b", 64), AllowedModels: []string{"nope"}}), "allowed_models[0]"},
		{PutOp(&controlv1.Key{Id: "k2", Hash: "sha256:" + strings.Repeat("b", 64), AllowedRegions: []string{"mars"}}), "allowed_regions[0]"},
		{PutOp(&controlv1.Key{Id: "k2", Hash: "sha256:" + strings.Repeat("b", 64), Rpm: 2_000_000_000}), "rpm"},
		{PutOp(&controlv1.Tenant{Id: "t2", BudgetPeriod: "year"}), "budget_period"},
		{PutOp(&controlv1.Tenant{Id: "t2", Tpm: 2_000_000_000}), "tpm"},
		{PutOp(&controlv1.Tenant{Id: "t2", WebhookAllow: []string{"http://x.example.com/"}, WebhookSecretRef: "env:MERIDIAN_SECRET_W"}), "webhook_allow[0]"},
		{PutOp(&controlv1.Tenant{Id: "t2", WebhookAllow: []string{"hooks.example.com"}}), "webhook_secret_ref"},
		{PutOp(&controlv1.Tenant{Id: "t2", WebhookAllow: []string{"10.0.0.0/8"}, WebhookSecretRef: "whsec_c2VjcmV0"}), "webhook_secret_ref"},
		{PutOp(&controlv1.Price{Provider: "oai", Model: "llama3", BatchInput: -1}), "batch_input"},
	}
	for i, c := range cases {
		r := write(t, f, uint64(2+i), "bad"+c.field, c.op)
		if r.GetCode() == "" || r.GetField() != c.field {
			t.Errorf("%s: got %q field %q: %s", c.field, r.GetCode(), r.GetField(), r.GetMessage())
		}
	}
	ok := PutOp(&controlv1.Key{Id: "k2", Hash: "sha256:" + strings.Repeat("b", 64), Tenant: "acme", AllowedModels: []string{"llama3"},
		AllowedRegions: []string{"eu"}, Rpm: 60, Tpm: 1000, ExpiresAt: "2027-01-31T00:00:00Z", Disabled: true})
	if r := write(t, f, 20, "good", ok, PutOp(&controlv1.Tenant{Id: "acme", Rpm: 10, BudgetPeriod: "week",
		WebhookAllow: []string{"hooks.example.com", "*.example.org", "10.0.0.0/8"}, WebhookSecretRef: "env:MERIDIAN_SECRET_WEBHOOK"})); r.GetCode() != "" {
		t.Fatal(r)
	}
	// A model a key allows cannot be deleted under it.
	if r := write(t, f, 21, "del", DeleteOp(KindRoute, "llama3"), DeleteOp(KindPlacement, "p1"), DeleteOp(KindPrice, "oai/llama3"), DeleteOp(KindModel, "llama3")); r.GetCode() != CodeConflict {
		t.Fatalf("deleting a model a key allows: %v", r)
	}
}

// BenchmarkUsageApply measures applying usage per record: in batches of
// 1,000 (what the aggregator proposes), against batches of one record
// (what one Raft write per request would cost) in the same run.
func BenchmarkUsageApply(b *testing.B) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, size := range []int{1, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			f := New(Config{})
			ops := fleet()
			ops[5] = PutOp(&controlv1.Tenant{Id: "acme", MonthlyBudget: 1e6, HardLimit: true})
			b1, _ := Encode(TypeWrite, &controlv1.Write{RequestId: "w", Ops: ops})
			f.Apply(1, b1)
			idx, n := uint64(2), 0
			b.ReportAllocs()
			b.ResetTimer()
			for n < b.N {
				batch := &controlv1.UsageBatch{NowUnixMs: now.UnixMilli()}
				for range size {
					batch.Records = append(batch.Records, &controlv1.UsageRecord{RequestId: fmt.Sprint("r", n), Tenant: "acme", Key: "k1",
						Model: "llama3", TokensIn: 10, TokensOut: 20, CostNanoUsd: 1234, UnixMs: now.UnixMilli()})
					n++
				}
				cmd, _ := Encode(TypeUsageBatch, batch)
				f.Apply(idx, cmd)
				idx++
			}
			b.ReportMetric(float64(idx-2)/float64(n), "raft_writes/record")
		})
	}
}

func TestTenantSpendCountsItsPeriodOnly(t *testing.T) {
	f := New(Config{})
	ops := fleet()
	ops[5] = PutOp(&controlv1.Tenant{Id: "acme", BudgetPeriod: "week"})
	write(t, f, 1, "w1", ops...)
	wed := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) // a Wednesday; the week began Monday 11-30
	usage(t, f, 2, wed,
		rec("sun", "acme", "llama3", time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC), 0, 0, 1),
		rec("mon", "acme", "llama3", time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), 0, 0, 10),
		rec("wed", "acme", "llama3", wed, 0, 0, 100),
		rec("sun2", "acme", "llama3", time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC), 0, 0, 1000),
		rec("next", "acme", "llama3", time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), 0, 0, 10000),
		rec("other", "acmex", "llama3", wed, 0, 0, 100000),
	)
	spend, start, end := f.State().TenantSpend("acme", wed)
	if spend != 1110 || start.Format(time.DateOnly) != "2026-11-30" || end.Format(time.DateOnly) != "2026-12-07" {
		t.Fatalf("week spend %d over %v – %v, want 1110 over 2026-11-30 – 2026-12-07", spend, start, end)
	}
	// Restored from a snapshot, the per-day index is rebuilt.
	var buf bytes.Buffer
	f.State().WriteTo(&buf)
	g := New(Config{})
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := g.State().TenantSpend("acme", wed); s != 1110 || !g.State().Equal(f.State()) {
		t.Fatalf("restored week spend %d", s)
	}
}

// BenchmarkUsageAppliedMemory reports the heap the state machine holds
// per applied record beyond its totals: what its deduplication keeps for
// UsageRetention, the figure that bounds the control plane's memory at a
// fleet's request rate. Records carry their edge run and seq, as edges
// send them; by request ID alone it was about 980 bytes a record.
func BenchmarkUsageAppliedMemory(b *testing.B) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	const records = 100_000
	for range b.N {
		f := New(Config{})
		b1, _ := Encode(TypeWrite, &controlv1.Write{RequestId: "w", Ops: fleet()})
		f.Apply(1, b1)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		idx := uint64(2)
		for n := 0; n < records; {
			batch := &controlv1.UsageBatch{NowUnixMs: now.UnixMilli()}
			for range 1000 {
				// Edges send their run and seq; eight edges.
				batch.Records = append(batch.Records, &controlv1.UsageRecord{RequestId: fmt.Sprintf("01JDX3V0Q9Z7Y6W5V4%08d", n), Tenant: "acme", Key: "k1",
					Model: "llama3", TokensIn: 10, TokensOut: 20, CostNanoUsd: 1234, UnixMs: now.UnixMilli(),
					Node: fmt.Sprint("edge-", n%8), Epoch: 42, Seq: uint64(n/8 + 1)})
				n++
			}
			cmd, _ := Encode(TypeUsageBatch, batch)
			f.Apply(idx, cmd)
			idx++
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/records, "heap_bytes/record")
		runtime.KeepAlive(f)
	}
}

// run returns rec stamped with an edge run and seq.
func run(r *controlv1.UsageRecord, node string, epoch, seq uint64) *controlv1.UsageRecord {
	r.Node, r.Epoch, r.Seq = node, epoch, seq
	return r
}

func runOf(t *testing.T, s *State, node string, epoch uint64) *controlv1.UsageSeq {
	t.Helper()
	var got *controlv1.UsageSeq
	s.UsageRuns(func(r *controlv1.UsageSeq) bool {
		if r.GetNode() == node && r.GetEpoch() == epoch {
			got = r
		}
		return true
	})
	return got
}

// Records that carry their edge run are deduplicated by seq, in any
// order, without remembering their request IDs; a malformed record's
// stub closes its gap; an older state is never changed by a newer batch.
func TestUsageRunsDeduplicateBySeq(t *testing.T) {
	f := New(Config{})
	write(t, f, 1, "w1", fleet()...)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := func(seq uint64) *controlv1.UsageRecord {
		return run(rec(fmt.Sprint("q", seq), "acme", "llama3", now, 1, 1, 10), "edge-1", 7, seq)
	}
	if got := usage(t, f, 2, now, r(1), r(2), r(4), r(2)); got.Applied != 3 || got.Duplicate != 1 {
		t.Fatalf("first batch: %+v", got)
	}
	before := f.State()
	if g := runOf(t, before, "edge-1", 7); g.GetHigh() != 2 || !slices.Equal(g.GetAbove(), []uint64{4}) {
		t.Fatalf("run after 1,2,4: %v", g)
	}
	if before.UsageApplied("q1") {
		t.Fatal("a record with a run was remembered by request ID too")
	}
	// 3 arrives malformed, as the aggregator's stub: counted malformed,
	// its seq used up, so the run closes up to 4. Re-sent 1 and 4 are
	// duplicates; the same seq under another epoch is another run.
	stub := &controlv1.UsageRecord{Node: "edge-1", Epoch: 7, Seq: 3}
	if got := usage(t, f, 3, now, stub, r(1), r(4), run(rec("other", "acme", "llama3", now, 1, 1, 10), "edge-1", 8, 1)); got.Applied != 1 || got.Duplicate != 2 || got.Malformed != 1 {
		t.Fatalf("second batch: %+v", got)
	}
	if g := runOf(t, f.State(), "edge-1", 7); g.GetHigh() != 4 || len(g.GetAbove()) != 0 {
		t.Fatalf("run after the stub: %v", g)
	}
	if g := runOf(t, before, "edge-1", 7); g.GetHigh() != 2 || len(g.GetAbove()) != 1 {
		t.Fatalf("the older state's run changed: %v", g)
	}
	if n, _, _, cost := totals(f.State(), "acme"); n != 4 || cost != 40 {
		t.Fatalf("totals: %d records, %d nano-USD; want 4, 40", n, cost)
	}
	// A snapshot keeps the runs; restored, a re-sent record is dropped.
	var buf bytes.Buffer
	if _, err := f.State().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(Config{})
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if !g.State().Equal(f.State()) {
		t.Fatal("restored state differs")
	}
	if got := usage(t, g, 4, now, r(2)); got.Duplicate != 1 {
		t.Fatalf("after restore: %+v", got)
	}
	// A run with nothing applied for UsageRetention is forgotten, by
	// batch time.
	later := now.Add(UsageRetention + 2*time.Minute)
	usage(t, f, 4, later, run(rec("late", "acme", "llama3", later, 1, 1, 10), "edge-2", 9, 1))
	if runOf(t, f.State(), "edge-1", 7) != nil || runOf(t, f.State(), "edge-2", 9) == nil {
		t.Fatal("retention did not forget the old run and keep the new one")
	}
}
