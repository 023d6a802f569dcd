package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/controltest"
)

// A write that would leave a table that could never route is refused
// with a 400 naming the table's field, and changes nothing; a write that
// leaves a table only the edge's checks reject (a model not yet routed
// or placed) goes through, so a fleet can be built one entity at a time.
func TestWritesThatCouldNeverRouteAreRefused(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := c.Leader()
	do := func(method, path, body string) (int, []byte) {
		t.Helper()
		st, b, _, err := m.Do(ctx, method, path, controltest.AdminToken, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return st, b
	}
	for _, w := range []struct{ path, body string }{
		{"/v1/control/regions/eu-west", `{"id":"eu-west"}`},
		{"/v1/control/regions/us-east", `{"id":"us-east"}`},
		{"/v1/control/regions/ap-south", `{"id":"ap-south"}`},
		{"/v1/control/nodes/edge-a", `{"id":"edge-a","region":"eu-west"}`},
		{"/v1/control/nodes/edge-u", `{"id":"edge-u","region":"us-east"}`},
		{"/v1/control/providers/oai", `{"id":"oai","preset":"openai","secret_ref":"env:MERIDIAN_SECRET_OAI_KEY","region":"eu-west"}`},
		{"/v1/control/models/gpt", `{"id":"gpt"}`}, // alone: the edge's check fails, the write does not
		{"/v1/control/routes/gpt", `{"model":"gpt","targets":[{"provider":"oai"}],"allowed_regions":["eu-west"]}`},
		{"/v1/control/models/tiny", `{"id":"tiny","local":true,"ollama":"tinyllama"}`},
		{"/v1/control/placements/tiny-eu", `{"id":"tiny-eu","model":"tiny","region":"eu-west","desired":1}`},
		{"/v1/control/tenants/acme", `{"id":"acme","allowed_regions":["eu-west","ap-south"]}`},
	} {
		if st, b := do("PUT", w.path, w.body); st != 200 {
			t.Fatalf("PUT %s: %d %s", w.path, st, b)
		}
	}

	tests := []struct {
		name, method, path, body string
		field, says              string
	}{
		{"route regions nobody serves in", "PUT", "/v1/control/routes/gpt", `{"model":"gpt","targets":[{"provider":"oai"}],"allowed_regions":["ap-south"]}`,
			"routes[gpt].allowed_regions", "no node or provider"},
		{"route excluding its providers", "PUT", "/v1/control/routes/gpt", `{"model":"gpt","targets":[{"provider":"oai"}],"allowed_regions":["us-east"]}`,
			"routes[gpt].allowed_regions", "could never serve"},
		{"model regions nobody serves in", "PUT", "/v1/control/models/gpt", `{"id":"gpt","allowed_regions":["ap-south"]}`,
			"models[gpt].allowed_regions", "no node or provider"},
		{"tenant regions nobody serves in", "PUT", "/v1/control/tenants/acme", `{"id":"acme","allowed_regions":["ap-south"]}`,
			"tenants[acme].allowed_regions", "no node or provider"},
		{"placement on a region without nodes", "PUT", "/v1/control/placements/tiny-ap", `{"id":"tiny-ap","model":"tiny","region":"ap-south","desired":1}`,
			"placements[tiny-ap].region", "holds no node"},
		{"the last node of a placed region", "DELETE", "/v1/control/nodes/edge-a", "",
			"placements[tiny-eu].region", "holds no node"},
		{"a placed model losing its local source", "PUT", "/v1/control/models/tiny", `{"id":"tiny"}`,
			"placements[tiny-eu].model", "no local source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := m.Node.FSM().State().Index()
			st, b := do(tt.method, tt.path, tt.body)
			e := decodeErr(t, b)
			if st != 400 || e.Error.Code != "invalid" || e.Error.Field != tt.field || !strings.Contains(e.Error.Message, tt.says) {
				t.Fatalf("%s %s: %d %s; want 400 invalid on %s saying %q", tt.method, tt.path, st, b, tt.field, tt.says)
			}
			if after := m.Node.FSM().State().Index(); after != before {
				t.Fatalf("the refused write changed the state: index %d → %d", before, after)
			}
		})
	}

	// The same changes in an order that routes are accepted.
	if st, b := do("PUT", "/v1/control/providers/oai-us", `{"id":"oai-us","preset":"openai","secret_ref":"env:MERIDIAN_SECRET_OAI_KEY","region":"us-east"}`); st != 200 {
		t.Fatalf("provider in us-east: %d %s", st, b)
	}
	if st, b := do("PUT", "/v1/control/routes/gpt", `{"model":"gpt","targets":[{"provider":"oai"}],"fallbacks":[{"provider":"oai-us"}],"allowed_regions":["us-east"]}`); st != 200 {
		t.Fatalf("route served in us-east: %d %s", st, b)
	}
}
