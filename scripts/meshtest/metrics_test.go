package meshtest

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// family is a metric family the fleet must export, and where: on every
// edge, on at least one edge (it counts traffic some edge served), on
// every control node or on at least one (the leader's writes).
type family struct {
	name  string
	where string
	// hop: only a request forwarded over a link makes the family, and
	// only placements on an engine make peer targets, so it is checked
	// when the mesh runs Ollama.
	hop bool
}

const (
	everyEdge    = "every edge"
	someEdge     = "some edge"
	everyControl = "every control node"
	someControl  = "some control node"
)

// families is the metric set operators and ops/ rely on, in one place.
// README's "Observability" table lists the same families.
var families = []family{
	// Requests, errors, latency, tokens and cost.
	{"meridian_requests_total", someEdge, false},
	{"meridian_request_errors_total", someEdge, false},
	{"meridian_requests_in_flight", everyEdge, false},
	{"meridian_time_to_first_token_seconds", someEdge, false},
	{"meridian_inter_token_seconds", someEdge, false},
	{"meridian_overhead_seconds", everyEdge, false},
	{"meridian_tokens_total", someEdge, false},
	{"meridian_tenant_requests_total", someEdge, false},
	{"meridian_tenant_tokens_total", someEdge, false},
	{"meridian_cost_usd_total", someEdge, false},
	{"meridian_upstream_attempts_total", someEdge, false},
	{"meridian_route_decisions_total", someEdge, false},
	{"meridian_route_refusals_total", someEdge, false},
	{"meridian_breaker_state", someEdge, false},
	// Gossip and links.
	{"meridian_gossip_members", everyEdge, false},
	{"meridian_link_up", someEdge, true},
	{"meridian_link_rtt_seconds", someEdge, true},
	{"meridian_link_streams_total", someEdge, true},
	{"meridian_link_streams_open", someEdge, true},
	{"meridian_link_handshakes_total", someEdge, true},
	// The routing table.
	{"meridian_table_revision", everyEdge, false},
	{"meridian_table_leader_revision", everyEdge, false},
	{"meridian_table_lag_seconds", everyEdge, false},
	{"meridian_table_last_contact_age_seconds", everyEdge, false},
	{"meridian_table_stale", everyEdge, false},
	{"meridian_table_applied_total", everyEdge, false},
	{"meridian_table_bus_connected", everyEdge, false},
	// The control plane: Raft, the table it publishes, edges, spend.
	{"meridian_control_raft_leader", everyControl, false},
	{"meridian_control_leader_known", everyControl, false},
	{"meridian_control_raft_commit_index", everyControl, false},
	{"meridian_control_raft_applied_index", everyControl, false},
	{"meridian_control_raft_commit_seconds", everyControl, false},
	{"meridian_control_raft_snapshot_age_seconds", everyControl, false},
	{"meridian_control_writes_total", someControl, false},
	{"meridian_control_table_revision", everyControl, false},
	{"meridian_control_edges", everyControl, false},
	{"meridian_budget_usd", everyControl, false},
	{"meridian_budget_spend_usd", everyControl, false},
}

// testMetrics scrapes /metrics on every edge and control node of the
// running mesh and checks every family by name, after a streamed
// request (inter-token time) and a refused one (errors).
func testMetrics(t *testing.T, m *mesh) {
	if a := m.chat(t, m.c, "anywhere", keyOpen, "", `"stream":true`); a.status != http.StatusOK {
		t.Fatalf("streamed request: %d %s", a.status, a.body)
	}
	if a := m.chat(t, m.c, "no-such-model", keyOpen, "", ""); a.status != http.StatusNotFound {
		t.Fatalf("request for an unknown model: %d %s", a.status, a.body)
	}
	checked := families
	if m.noOllama != "" {
		t.Logf("families of link hops not checked: %s", m.noOllama)
		checked = slices.DeleteFunc(slices.Clone(families), func(f family) bool { return f.hop })
	}
	var missing []string
	wait.For(t, 60*time.Second, "every metric family on the fleet's /metrics", func() error {
		missing = missing[:0]
		some := map[string]bool{}
		for _, e := range m.edges {
			got, err := scrape(m, e.url+"/metrics")
			if err != nil {
				return err
			}
			for _, f := range checked {
				switch {
				case f.where == everyEdge && !got[f.name]:
					missing = append(missing, f.name+" on "+e.id)
				case f.where == someEdge && got[f.name]:
					some[f.name] = true
				}
			}
		}
		for _, c := range m.control.Members {
			got, err := scrape(m, c.URL+"/metrics")
			if err != nil {
				return err
			}
			for _, f := range checked {
				switch {
				case f.where == everyControl && !got[f.name]:
					missing = append(missing, f.name+" on "+c.Name)
				case f.where == someControl && got[f.name]:
					some[f.name] = true
				}
			}
		}
		for _, f := range checked {
			if (f.where == someEdge || f.where == someControl) && !some[f.name] {
				missing = append(missing, f.name+" on "+f.where)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing: %s", strings.Join(missing, ", "))
		}
		return nil
	})
	// Labels come from the table, never from the client.
	for _, e := range m.edges {
		text, err := get(m, e.url+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text, "no-such-model") {
			t.Errorf("%s's /metrics names a model only a client made up", e.id)
		}
	}
}

// scrape returns the family names a /metrics endpoint exports.
func scrape(m *mesh, url string) (map[string]bool, error) {
	text, err := get(m, url)
	if err != nil {
		return nil, err
	}
	// Every family the text format exports has its "# TYPE name kind"
	// line, and at least one sample after it.
	got := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			got[f[2]] = true
		}
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("%s: no metric families", url)
	}
	return got, nil
}

func get(m *mesh, url string) (string, error) {
	resp, err := m.client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return string(b), nil
}
