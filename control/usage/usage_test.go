package usage

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

var at = time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)

func applyBatch(t testing.TB, f *fsm.FSM, index uint64, recs ...*controlv1.UsageRecord) fsm.UsageResult {
	t.Helper()
	b, err := fsm.Encode(fsm.TypeUsageBatch, &controlv1.UsageBatch{NowUnixMs: at.UnixMilli(), Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(index, b)
	r, ok := fsm.ParseUsageResult(res.GetMessage())
	if res.GetCode() != "" || !ok {
		t.Fatalf("batch: %v", res)
	}
	return r
}

func TestDecode(t *testing.T) {
	good := &usagev1.Record{RequestId: "r1", Tenant: "acme", Key: "k1", Model: "m", Node: "edge-1", TokensIn: 3, TokensOut: 4,
		CostNanoUsd: 42, UnixMs: at.UnixMilli()}
	b, _ := proto.Marshal(good)
	rec, err := Decode(usagewire.UsageSubject("edge-1"), b)
	if err != nil || rec.GetRequestId() != "r1" || rec.GetCostNanoUsd() != 42 || rec.GetTokensOut() != 4 || rec.GetUnixMs() != at.UnixMilli() {
		t.Fatalf("Decode = %v, %v", rec, err)
	}
	bad := map[string]func(r *usagev1.Record) (subject string){
		"another node's subject": func(r *usagev1.Record) string { return usagewire.UsageSubject("edge-2") },
		"no request ID":          func(r *usagev1.Record) string { r.RequestId = ""; return usagewire.UsageSubject("edge-1") },
		"negative cost":          func(r *usagev1.Record) string { r.CostNanoUsd = -5; return usagewire.UsageSubject("edge-1") },
		"no time":                func(r *usagev1.Record) string { r.UnixMs = 0; return usagewire.UsageSubject("edge-1") },
		"NUL in tenant":          func(r *usagev1.Record) string { r.Tenant = "a\x00"; return usagewire.UsageSubject("edge-1") },
	}
	for name, mutate := range bad {
		r := proto.Clone(good).(*usagev1.Record)
		subj := mutate(r)
		b, _ := proto.Marshal(r)
		if _, err := Decode(subj, b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := Decode(usagewire.UsageSubject("edge-1"), []byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("garbage decoded")
	}
}

// FuzzDecode: whatever an edge publishes, Decode does not panic, and a
// record it accepts applies to the totals beside a good one without
// poisoning the batch.
func FuzzDecode(f *testing.F) {
	good := &usagev1.Record{RequestId: "r1", Tenant: "acme", Key: "k1", Model: "m", Node: "edge-1", TokensIn: 3, TokensOut: 4,
		CostNanoUsd: 42, UnixMs: at.UnixMilli()}
	b, _ := proto.Marshal(good)
	f.Add("meridian.v1.usage.edge-1", b)
	f.Add("meridian.v1.usage.edge-2", b)
	f.Add("meridian.v1.usage.", []byte{})
	f.Add("x", []byte{0x0a, 0x80})
	huge, _ := proto.Marshal(&usagev1.Record{RequestId: "r2", Node: "edge-1", CostNanoUsd: 1 << 62, TokensIn: 1 << 63, UnixMs: at.UnixMilli()})
	f.Add("meridian.v1.usage.edge-1", huge)
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		rec, err := Decode(subject, data)
		if err != nil {
			return
		}
		if err := fsm.CheckUsageRecord(rec); err != nil {
			t.Fatalf("Decode accepted a record the state machine refuses: %v", err)
		}
		fm := fsm.New(fsm.Config{})
		other := &controlv1.UsageRecord{RequestId: "other-" + rec.GetRequestId(), Tenant: "t", UnixMs: at.UnixMilli(), CostNanoUsd: 1}
		r := applyBatch(t, fm, 1, rec, other)
		if r.Applied != 2 || r.Malformed != 0 {
			t.Fatalf("batch of a decoded and a good record: %+v", r)
		}
	})
}

func TestQueryGroups(t *testing.T) {
	f := fsm.New(fsm.Config{})
	rec := func(id, tenant, key, model string, when time.Time, cost int64) *controlv1.UsageRecord {
		return &controlv1.UsageRecord{RequestId: id, Tenant: tenant, Key: key, Model: model, TokensIn: 10, TokensOut: 1, CostNanoUsd: cost, UnixMs: when.UnixMilli()}
	}
	applyBatch(t, f, 1,
		rec("1", "acme", "k1", "m1", at, 1_000_000_001),
		rec("2", "acme", "k2", "m1", at.Add(time.Hour), 2),
		rec("3", "acme", "k1", "m2", at.Add(-24*time.Hour), 5),
		rec("4", "beta", "k3", "m1", at, 7),
	)
	s := f.State()
	run := func(q Query) []Row {
		t.Helper()
		rows, err := q.Run(s)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	all := run(Query{})
	if len(all) != 1 || all[0].Requests != 4 || all[0].CostNanoUSD != 1_000_000_015 || all[0].CostUSD != "1.000000015" || all[0].TokensIn != 40 {
		t.Fatalf("all: %+v", all)
	}
	byTenant := run(Query{GroupBy: []string{"tenant"}})
	if len(byTenant) != 2 || byTenant[0].Tenant != "acme" || byTenant[0].Requests != 3 || byTenant[1].CostNanoUSD != 7 {
		t.Fatalf("by tenant: %+v", byTenant)
	}
	byDay := run(Query{Tenant: "acme", GroupBy: []string{"day", "model"}})
	if len(byDay) != 2 || byDay[0].Day != "2026-12-01" || byDay[0].Model != "m2" || byDay[1].Day != "2026-12-02" || byDay[1].Requests != 2 {
		t.Fatalf("acme by day and model: %+v", byDay)
	}
	byHour := run(Query{Model: "m1", Key: "k1", GroupBy: []string{"hour"}})
	if len(byHour) != 1 || byHour[0].Hour != "2026-12-02T10:00:00Z" || byHour[0].Requests != 1 {
		t.Fatalf("m1/k1 by hour: %+v", byHour)
	}
	// [from, to) counts the hours that start inside it.
	window := run(Query{From: at.Truncate(time.Hour), To: at.Truncate(time.Hour).Add(time.Hour), GroupBy: []string{"key"}})
	if len(window) != 2 || window[0].Key != "k1" || window[1].Key != "k3" {
		t.Fatalf("10:00-11:00 by key: %+v", window)
	}
	for _, q := range []Query{{GroupBy: []string{"region"}}, {GroupBy: []string{"hour", "day"}}, {From: at, To: at}} {
		if _, err := q.Run(s); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%+v: %v, want ErrBadQuery", q, err)
		}
	}
}

func TestUSD(t *testing.T) {
	for nano, want := range map[int64]string{0: "0.000000000", 1: "0.000000001", 12_500_000_000: "12.500000000", 9_223_372_036_854_775_807: "9223372036.854775807"} {
		if got := USD(nano); got != want {
			t.Errorf("USD(%d) = %s, want %s", nano, got, want)
		}
	}
}

func TestSpendMetricsBoundTheTenantLabel(t *testing.T) {
	f := fsm.New(fsm.Config{})
	w, _ := fsm.Encode(fsm.TypeWrite, &controlv1.Write{RequestId: "w", Ops: []*controlv1.Op{
		fsm.PutOp(&controlv1.Tenant{Id: "acme"}), fsm.PutOp(&controlv1.Model{Id: "m1"}),
	}})
	if r := f.Apply(1, w); r.GetCode() != "" {
		t.Fatal(r)
	}
	applyBatch(t, f, 2,
		&controlv1.UsageRecord{RequestId: "1", Tenant: "acme", Model: "m1", TokensIn: 3, TokensOut: 4, CostNanoUsd: 1_500_000_000, UnixMs: at.UnixMilli()},
		&controlv1.UsageRecord{RequestId: "2", Tenant: "made-up-1", Model: "m1", CostNanoUsd: 1, UnixMs: at.UnixMilli()},
		&controlv1.UsageRecord{RequestId: "3", Tenant: "made-up-2", Model: "nope", CostNanoUsd: 2, UnixMs: at.UnixMilli()},
	)
	reg := prometheus.NewRegistry()
	newMetrics(reg, f)
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "," + l.GetName() + "=" + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"meridian_cost_usd_total,model=m1,tenant=acme":                   1.5,
		"meridian_cost_usd_total,model=m1,tenant=_other":                 1e-9,
		"meridian_cost_usd_total,model=_other,tenant=_other":             2e-9,
		"meridian_usage_tokens_total,direction=in,model=m1,tenant=acme":  3,
		"meridian_usage_tokens_total,direction=out,model=m1,tenant=acme": 4,
		"meridian_usage_requests_total,model=_other,tenant=_other":       1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.Contains(k, "made-up") {
			t.Errorf("an unknown tenant became a label: %s", k)
		}
	}
}
