package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

func TestKeyLimitsTenantBudgetsAndUsage(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	m := c.Leader()
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": m.URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}
	cli.ok("region", "set", "eu", "latitude=50", "longitude=8")
	cli.ok("model", "set", "m1")
	cli.ok("tenant", "set", "acme", "--budget", "12.5", "--period", "week", "--hard-limit", "--rpm", "100", "--tpm", "5000")
	tn, _ := m.Node.FSM().State().Get(fsm.KindTenant, "acme")
	if ten := tn.(*controlv1.Tenant); ten.GetMonthlyBudget() != 12.5 || ten.GetBudgetPeriod() != "week" || !ten.GetHardLimit() || ten.GetRpm() != 100 || ten.GetTpm() != 5000 {
		t.Fatalf("tenant %v", ten)
	}
	before := time.Now()
	out := cli.ok("key", "new", "k1", "--tenant", "acme", "--models", "m1", "--regions", "eu", "--rpm", "60", "--tpm", "1000", "--expires", "720h")
	if !strings.Contains(out, "mk-") || !strings.Contains(out, "only time") {
		t.Fatalf("key new printed %q", out)
	}
	km, _ := m.Node.FSM().State().Get(fsm.KindKey, "k1")
	k := km.(*controlv1.Key)
	exp, err := time.Parse(time.RFC3339, k.GetExpiresAt())
	if err != nil || exp.Before(before.Add(719*time.Hour)) || exp.After(time.Now().Add(721*time.Hour)) || k.GetTenant() != "acme" ||
		k.GetRpm() != 60 || k.GetTpm() != 1000 || strings.Join(k.GetAllowedModels(), ",") != "m1" || strings.Join(k.GetAllowedRegions(), ",") != "eu" {
		t.Fatalf("key %v", k)
	}
	if strings.Contains(k.String(), "mk-") {
		t.Fatal("the key itself was stored")
	}
	cli.ok("key", "disable", "k1")
	km, _ = m.Node.FSM().State().Get(fsm.KindKey, "k1")
	if !km.(*controlv1.Key).GetDisabled() || km.(*controlv1.Key).GetRpm() != 60 {
		t.Fatalf("disabled key %v", km)
	}
	cli.ok("key", "enable", "k1")
	km, _ = m.Node.FSM().State().Get(fsm.KindKey, "k1")
	if km.(*controlv1.Key).GetDisabled() {
		t.Fatal("enable left the key disabled")
	}
	for _, bad := range [][]string{
		{"key", "disable", "nope"},
		{"key", "new", "k2", "--expires", "soon"},
		{"key", "new", "k2", "--budget", "5"},
		{"tenant", "set", "acme", "--models", "m1"},
		{"tenant", "set", "acme", "--period", "year"},
		{"region", "set", "eu", "--rpm", "5"},
		{"usage", "--group-by", "region"},
	} {
		if code, _, _ := cli.run(bad...); code == 0 {
			t.Errorf("meridianctl %s succeeded", strings.Join(bad, " "))
		}
	}

	at := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	if _, err := m.Node.Apply(fsm.TypeUsageBatch, &controlv1.UsageBatch{NowUnixMs: at.UnixMilli(), Records: []*controlv1.UsageRecord{
		{RequestId: "r1", Tenant: "acme", Key: "k1", Model: "m1", TokensIn: 5, TokensOut: 7, CostNanoUsd: 1_234_567_891, UnixMs: at.UnixMilli()},
		{RequestId: "r2", Tenant: "acme", Key: "k1", Model: "m1", TokensIn: 1, TokensOut: 1, CostNanoUsd: 9, UnixMs: at.UnixMilli()},
	}}); err != nil {
		t.Fatal(err)
	}
	out = cli.ok("usage", "--tenant", "acme", "--group-by", "tenant,model")
	if !strings.Contains(out, "TENANT") || !strings.Contains(out, "acme") || !strings.Contains(out, "1.234567900") || !strings.Contains(out, "2 ") {
		t.Fatalf("usage table:\n%s", out)
	}
	var resp api.UsageResponse
	if err := json.Unmarshal([]byte(cli.ok("usage", "--json", "--group-by", "day")), &resp); err != nil || len(resp.Rows) != 1 ||
		resp.Rows[0].Day != "2026-12-02" || resp.Rows[0].CostNanoUSD != 1_234_567_900 || resp.Rows[0].TokensIn != 6 {
		t.Fatalf("usage --json: %+v %v", resp, err)
	}
}
