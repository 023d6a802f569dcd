package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

func TestUsageEndpoint(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	m := c.Leader()
	at := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	res, err := m.Node.Apply(fsm.TypeUsageBatch, &controlv1.UsageBatch{NowUnixMs: at.UnixMilli(), Records: []*controlv1.UsageRecord{
		{RequestId: "r1", Tenant: "acme", Key: "k1", Model: "m1", TokensIn: 5, TokensOut: 7, CostNanoUsd: 1_230_000_000, UnixMs: at.UnixMilli()},
		{RequestId: "r2", Tenant: "acme", Key: "k2", Model: "m1", TokensIn: 1, TokensOut: 1, CostNanoUsd: 4_560_000_001, UnixMs: at.Add(25 * time.Hour).UnixMilli()},
		{RequestId: "r3", Tenant: "beta", Key: "k3", Model: "m2", TokensIn: 2, TokensOut: 2, CostNanoUsd: 1, UnixMs: at.UnixMilli()},
	}})
	if err != nil || res.GetCode() != "" {
		t.Fatalf("usage batch: %v %v", res, err)
	}
	get := func(path, token string) (int, []byte) {
		st, b, _, err := m.Do(context.Background(), "GET", path, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		return st, b
	}
	st, b := get("/v1/control/usage?tenant=acme&group_by=day,key&from=2026-12-01T00:00:00Z&to=2026-12-04T00:00:00Z", controltest.ReadToken)
	var resp api.UsageResponse
	if st != http.StatusOK || json.Unmarshal(b, &resp) != nil {
		t.Fatalf("usage: %d %s", st, b)
	}
	if len(resp.Rows) != 2 || resp.Rows[0].Day != "2026-12-02" || resp.Rows[0].Key != "k1" || resp.Rows[0].CostUSD != "1.230000000" ||
		resp.Rows[1].Day != "2026-12-03" || resp.Rows[1].CostNanoUSD != 4_560_000_001 || resp.Rows[1].Tenant != "" || !resp.Through.Equal(at) {
		t.Fatalf("acme by day and key: %s", b)
	}
	st, b = get("/v1/control/usage?model=m2&consistent", controltest.ReadToken)
	if json.Unmarshal(b, &resp) != nil || st != 200 || len(resp.Rows) != 1 || resp.Rows[0].Requests != 1 || resp.Rows[0].TokensOut != 2 {
		t.Fatalf("m2: %d %s", st, b)
	}
	if st, _ := get("/v1/control/usage", ""); st != http.StatusUnauthorized {
		t.Fatalf("no token: %d", st)
	}
	for path, field := range map[string]string{
		"/v1/control/usage?group_by=region":                                   "group_by",
		"/v1/control/usage?group_by=hour,day":                                 "group_by",
		"/v1/control/usage?from=yesterday":                                    "from",
		"/v1/control/usage?to=2026-12-02":                                     "to",
		"/v1/control/usage?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z": "from",
	} {
		st, b := get(path, controltest.ReadToken)
		var e struct {
			Error struct{ Code, Field string } `json:"error"`
		}
		if st != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Error.Code != fsm.CodeInvalid || e.Error.Field != field {
			t.Errorf("%s: %d %s", path, st, b)
		}
	}
}
