package meshtest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// family is a metric family the fleet must export, and where: on every
// edge, on at least one edge (it counts traffic some edge served), or on
// every control node.
type family struct {
	name  string
	where string
}

const (
	everyEdge    = "every edge"
	someEdge     = "some edge"
	everyControl = "every control node"
)

// families is the metric set operators and ops/ rely on, in one place.
// README's "Observability" table lists the same families.
var families = []family{
	// Requests, errors, latency, tokens and cost.
	{"meridian_requests_total", someEdge},
	{"meridian_request_errors_total", someEdge},
	{"meridian_requests_in_flight", everyEdge},
	{"meridian_time_to_first_token_seconds", someEdge},
	{"meridian_inter_token_seconds", someEdge},
	{"meridian_overhead_seconds", everyEdge},
	{"meridian_tokens_total", someEdge},
	{"meridian_tenant_requests_total", someEdge},
	{"meridian_tenant_tokens_total", someEdge},
	{"meridian_cost_usd_total", someEdge},
	{"meridian_upstream_attempts_total", someEdge},
	{"meridian_route_decisions_total", someEdge},
	{"meridian_route_refusals_total", someEdge},
	{"meridian_breaker_state", someEdge},
	// Gossip and links.
	{"meridian_gossip_members", everyEdge},
	{"meridian_link_up", someEdge},
	{"meridian_link_rtt_seconds", someEdge},
	{"meridian_link_streams_total", someEdge},
	{"meridian_link_streams_open", someEdge},
	{"meridian_link_handshakes_total", someEdge},
	// The routing table.
	{"meridian_table_revision", everyEdge},
	{"meridian_table_leader_revision", everyEdge},
	{"meridian_table_lag_seconds", everyEdge},
	{"meridian_table_last_contact_age_seconds", everyEdge},
	{"meridian_table_stale", everyEdge},
	{"meridian_table_applied_total", everyEdge},
	{"meridian_table_bus_connected", everyEdge},
	// The control plane: Raft, the table it publishes, edges, spend.
	{"meridian_control_raft_leader", everyControl},
	{"meridian_control_leader_known", everyControl},
	{"meridian_control_raft_commit_index", everyControl},
	{"meridian_control_raft_applied_index", everyControl},
	{"meridian_control_raft_commit_seconds", everyControl},
	{"meridian_control_raft_snapshot_age_seconds", everyControl},
	{"meridian_control_writes_total", everyControl},
	{"meridian_control_table_revision", everyControl},
	{"meridian_control_edges", everyControl},
	{"meridian_budget_usd", everyControl},
	{"meridian_budget_spend_usd", everyControl},
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
	var missing []string
	wait.For(t, 60*time.Second, "every metric family on the fleet's /metrics", func() error {
		missing = missing[:0]
		some := map[string]bool{}
		for _, e := range m.edges {
			got, err := scrape(m, e.url+"/metrics")
			if err != nil {
				return err
			}
			for _, f := range families {
				switch {
				case f.where == everyEdge && !got[f.name]:
					missing = append(missing, f.name+" on "+e.id)
				case f.where == someEdge && got[f.name]:
					some[f.name] = true
				}
			}
		}
		for _, f := range families {
			if f.where == someEdge && !some[f.name] {
				missing = append(missing, f.name+" on any edge")
			}
		}
		for _, c := range m.control.Members {
			got, err := scrape(m, c.URL+"/metrics")
			if err != nil {
				return err
			}
			for _, f := range families {
				if f.where == everyControl && !got[f.name] {
					missing = append(missing, f.name+" on "+c.Name)
				}
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
