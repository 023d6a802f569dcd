package meshtest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// testResidency: an EU-only route, and a tenant kept in the EU, are
// served in the EU from every edge, and never outside it: not when the
// US provider is written first, and not when every EU target is down.
// Then the client is refused with 403 region_not_allowed in its own
// API's format, and the US provider has seen none of it.
func testResidency(t *testing.T, m *mesh) {
	eu, us := m.upstreams["resident-eu"], m.upstreams["resident-us"]
	usBefore := us.requests.Load()

	for _, e := range m.edges {
		for _, s := range sites {
			a := m.chat(t, e, "eu-only", keyOpen, s.location(), "")
			if a.status != 200 || routeField(a.route, "target") != "provider/resident-eu" {
				t.Fatalf("eu-only for a client in %s at %s: %d route %q: %s", s.region, e.id, a.status, a.route, a.body)
			}
		}
		a := m.chat(t, e, "anywhere", keyEU, "", "")
		if a.status != 200 || routeField(a.route, "target") != "provider/resident-eu" {
			t.Fatalf("anywhere for the EU tenant at %s: %d route %q: %s", e.id, a.status, a.route, a.body)
		}
	}
	x := m.explain(t, m.b, "eu-only")
	if ex, ok := x.excluded("provider/resident-us"); !ok || ex.Reason != "residency" || !slices.Equal(x.AllowedRegions, []string{"eu-west"}) {
		t.Errorf("dry run of eu-only at edge-b: excluded %+v, allowed regions %v", x.Excluded, x.AllowedRegions)
	}
	x = m.explain(t, m.c, "anywhere&key=key-eu")
	if ex, ok := x.excluded("provider/resident-us"); !ok || ex.Reason != "residency" || !slices.Equal(x.targets(), []string{"provider/resident-eu"}) {
		t.Errorf("dry run of anywhere for the EU tenant at edge-c: targets %v excluded %+v", x.targets(), x.Excluded)
	}

	// Every EU target down: once its breaker opens, the plan is empty
	// and residency is why.
	eu.down.Store(true)
	defer func() {
		eu.down.Store(false)
		// Leave the breakers closed for whoever comes next.
		for _, e := range m.edges {
			wait.For(t, 10*time.Second, "resident-eu back at "+e.id, func() bool {
				return m.chat(t, e, "eu-only", keyOpen, "", "").status == 200
			})
		}
	}()
	refused := func(what string, send func() answer) answer {
		t.Helper()
		var last answer
		sent := 0
		wait.For(t, 10*time.Second, what+" refused with 403", func() bool {
			if sent++; sent > 200 {
				t.Fatalf("%s: not refused after 200 requests; last %d %q: %s", what, last.status, last.route, last.body)
			}
			last = send()
			if last.status != 403 && last.status != 502 && last.status != 503 {
				t.Fatalf("%s with the EU down: %d %q: %s", what, last.status, last.route, last.body)
			}
			return last.status == 403
		})
		return last
	}
	for _, e := range m.edges {
		for _, s := range sites {
			a := refused("eu-only for a client in "+s.region+" at "+e.id, func() answer { return m.chat(t, e, "eu-only", keyOpen, s.location(), "") })
			var oe openAIError
			if err := json.Unmarshal(a.body, &oe); err != nil || oe.Error.Code != "region_not_allowed" || oe.Error.Type == "" ||
				!strings.Contains(oe.Error.Message, "eu-west") {
				t.Errorf("eu-only at %s: 403 body %s is not OpenAI's error with code region_not_allowed", e.id, a.body)
			}
		}
		a := refused("eu-only on /v1/messages at "+e.id, func() answer { return m.messages(t, e, "eu-only", keyOpen, "") })
		var ae anthropicError
		if err := json.Unmarshal(a.body, &ae); err != nil || ae.Type != "error" || ae.Error.Type != "permission_error" ||
			!strings.Contains(ae.Error.Message, "residency") {
			t.Errorf("eu-only on /v1/messages at %s: 403 body %s is not Anthropic's permission_error", e.id, a.body)
		}
		a = refused("anywhere for the EU tenant at "+e.id, func() answer { return m.chat(t, e, "anywhere", keyEU, "", "") })
		var oe openAIError
		if err := json.Unmarshal(a.body, &oe); err != nil || oe.Error.Code != "region_not_allowed" {
			t.Errorf("anywhere for the EU tenant at %s: 403 body %s lacks code region_not_allowed", e.id, a.body)
		}
	}
	if n := us.requests.Load() - usBefore; n != 0 {
		t.Fatalf("the US provider received %d requests of EU-only clients", n)
	}
	x = m.explain(t, m.a, "eu-only")
	if x.Refusal == nil || x.Refusal.Status != 403 || x.Refusal.Code != "region_not_allowed" {
		// The breaker may be half-open right now; then the probe is planned.
		if len(x.Targets) != 1 || x.Targets[0].Target != "provider/resident-eu" {
			t.Errorf("dry run of eu-only with the EU down: targets %v refusal %+v", x.targets(), x.Refusal)
		}
	}

	// The same request from a client without the policy is served in
	// the US: the policy refused, not an outage.
	a := m.chat(t, m.c, "anywhere", keyOpen, "", "")
	if a.status != 200 || routeField(a.route, "target") != "provider/resident-us" {
		t.Errorf("anywhere for an open tenant: %d route %q", a.status, a.route)
	}
}
