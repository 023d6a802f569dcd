package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/usage"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// withTenantKey adds clientKey, billed to tenant "acme", and a spool
// dir, to an edge's table and config.
func withTenantKey(c *config.Config, spool string, key table.Key, tn table.Tenant) {
	c.Table.Tenants = append(c.Table.Tenants, tn)
	c.Table.Keys = append(c.Table.Keys, &key)
	c.Usage.SpoolDir = spool
}

func spooled(t *testing.T, dir string) []*usagev1.Record {
	t.Helper()
	// A record being appended reads as a torn tail; the callers poll.
	recs, err := usage.ReadSpool(filepath.Join(dir, usage.SpoolFile))
	if err != nil && !errors.Is(err, usage.ErrCorrupt) {
		t.Fatal(err)
	}
	return recs
}

// TestForwardedUsageRecordedOnceByServingEdge: a request A forwards to B
// over a real link is recorded once, by B, under the tenant and key A
// authenticated, with A as via; A records nothing.
func TestForwardedUsageRecordedOnceByServingEdge(t *testing.T) {
	dir := linkCerts(t, "edge-a", "edge-b")
	spoolA, spoolB := t.TempDir(), t.TempDir()
	key := table.Key{ID: "k-acme", Hash: clientKeyHash(), Tenant: "acme"}
	tn := table.Tenant{ID: "acme"}
	b := startMesh(t, func(c *config.Config) {
		enableLink(c, dir, "edge-b")
		c.Region = "us"
		withTenantKey(c, spoolB, key, tn)
	})
	bURL := "meridian-link://" + b.node.Link().Addr().String() + "/edge-b"
	a := startMesh(t, func(c *config.Config) {
		enableLink(c, dir, "edge-a")
		withTenantKey(c, spoolA, key, tn)
		c.Table.Providers = append(c.Table.Providers, table.Provider{ID: "b", Kind: table.KindPeer, BaseURL: bURL})
		for i := range c.Table.Routes {
			r := *c.Table.Routes[i] // a copy: the routes may be shared with another node's config
			r.Targets = append([]table.Target{{Provider: "b", Model: r.Model}}, r.Targets...)
			c.Table.Routes[i] = &r
		}
	})
	auth := []string{"Authorization", "Bearer " + clientKey}
	bodies := []string{
		chatBody("gpt-4o-mini", "hello there", ""),
		chatBody("gpt-4o-mini", "hello there #mock chunks=5", `"stream":true,"stream_options":{"include_usage":true}`),
	}
	ids := map[string]bool{}
	for i, body := range bodies {
		resp := a.post("/v1/chat/completions", body, append(auth, "X-Request-Id", fmt.Sprintf("fwd-%d", i))...)
		got := readBody(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("X-Meridian-Route"), "target=peer/edge-b;") {
			t.Fatalf("request %d: %d %s route %q", i, resp.StatusCode, got, resp.Header.Get("X-Meridian-Route"))
		}
		ids[fmt.Sprintf("fwd-%d", i)] = true
	}
	var recs []*usagev1.Record
	wait.For(t, 15*time.Second, "B to record both requests", func() error {
		recs = spooled(t, spoolB)
		if len(recs) != len(bodies) {
			return fmt.Errorf("%d records on B", len(recs))
		}
		return nil
	})
	for _, r := range recs {
		if !ids[r.RequestId] || r.Tenant != "acme" || r.Key != "k-acme" || r.Node != "edge-b" || r.Region != "us" || r.Via != "edge-a" ||
			r.TargetKind != "provider" || r.Status != 200 || r.TokensOut == 0 {
			t.Errorf("B's record: %v", r)
		}
		delete(ids, r.RequestId)
	}
	// A's record would be queued before its answer was complete; once A
	// has stopped (its queue spooled), its spool must hold none.
	a.stop()
	select {
	case err := <-a.stopped:
		a.stopped <- err // for the harness's cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("A did not stop")
	}
	if recs := spooled(t, spoolA); len(recs) != 0 {
		t.Fatalf("the forwarding edge recorded %d requests: %v", len(recs), recs)
	}
}

// TestKeyRegionsAndDryRun: a key's allowed regions apply on top of its
// tenant's, and the dry run with &key= says why a key's requests are
// refused (budget, limits).
func TestKeyRegionsAndDryRun(t *testing.T) {
	m := startMesh(t, func(c *config.Config) {
		c.Region = "eu"
		c.Table.Regions = []table.Region{{ID: "eu"}, {ID: "us"}}
		for i := range c.Table.Providers {
			c.Table.Providers[i].Region = "us"
		}
		c.Table.Tenants = []table.Tenant{{ID: "acme", RPM: 5, Budget: 10, HardLimit: true, Exhausted: true, ExhaustedUntil: time.Now().Add(time.Hour)},
			{ID: "beta", TPM: 1000}}
		c.Table.Keys = []*table.Key{{ID: "k-acme", Hash: clientKeyHash(), Tenant: "acme"},
			{ID: "k-eu", Hash: "sha256:" + strings.Repeat("ab", 32), Tenant: "beta", AllowedRegions: []string{"eu"}, RPM: 3}}
	})
	var ex struct {
		AllowedRegions []string `json:"allowed_regions"`
		Excluded       []struct {
			Key    string `json:"key"`
			Reason string `json:"reason"`
		} `json:"excluded"`
		Access struct {
			Key     string `json:"key"`
			Tenant  string `json:"tenant"`
			Refused string `json:"refused"`
			Code    string `json:"code"`
			Limits  []struct {
				Subject string `json:"subject"`
				RPM     int64  `json:"rpm"`
				TPM     int64  `json:"tpm"`
			} `json:"limits"`
			Budget *struct {
				Exhausted bool `json:"exhausted"`
			} `json:"budget"`
		} `json:"access"`
	}
	get := func(q string) {
		t.Helper()
		resp, err := http.Get(m.url + "/v1/meridian/route?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		ex.Excluded, ex.AllowedRegions = nil, nil
		if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
			t.Fatal(err)
		}
	}
	get("model=gpt-4o-mini&key=k-eu")
	if len(ex.AllowedRegions) != 1 || ex.AllowedRegions[0] != "eu" || len(ex.Excluded) == 0 || ex.Excluded[0].Reason != "residency" {
		t.Fatalf("k-eu's plan: allowed %v excluded %+v", ex.AllowedRegions, ex.Excluded)
	}
	if ex.Access.Key != "k-eu" || ex.Access.Tenant != "beta" || ex.Access.Refused != "" || len(ex.Access.Limits) != 2 ||
		ex.Access.Limits[0].Subject != "key/k-eu" || ex.Access.Limits[0].RPM != 3 || ex.Access.Limits[1].TPM != 1000 {
		t.Fatalf("k-eu's access: %+v", ex.Access)
	}
	get("model=gpt-4o-mini&key=k-acme")
	if ex.Access.Code != "insufficient_quota" || ex.Access.Budget == nil || !ex.Access.Budget.Exhausted || !strings.Contains(ex.Access.Refused, "budget") {
		t.Fatalf("k-acme's access: %+v", ex.Access)
	}
	resp := m.post("/v1/chat/completions", chatBody("gpt-4o-mini", "hi", ""), "Authorization", "Bearer "+clientKey)
	if b := readBody(t, resp); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), `"code":"insufficient_quota"`) {
		t.Fatalf("exhausted tenant: %d %s", resp.StatusCode, b)
	}
	// The log line names tenant and key.
	wait.For(t, 10*time.Second, "the request's log line", func() bool {
		return strings.Contains(m.logs.String(), `"tenant":"acme","key":"k-acme"`)
	})
}
