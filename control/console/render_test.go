package console

import (
	"bytes"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProject(t *testing.T) {
	for _, c := range []struct{ lat, lon, x, y float64 }{
		{0, 0, mapW / 2, mapH / 2},
		{90, -180, 0, 0},
		{-90, 180, mapW, mapH},
		{53.35, -6.26, 482.6, 101.8}, // Dublin: north of the middle, just west of Greenwich
		{95, 200, mapW, 0},           // out of range is clamped
	} {
		x, y := project(c.lat, c.lon)
		if math.Abs(x-c.x) > 0.1 || math.Abs(y-c.y) > 0.1 {
			t.Errorf("project(%g, %g) = %.1f, %.1f; want %.1f, %.1f", c.lat, c.lon, x, y, c.x, c.y)
		}
	}
}

func TestBuildFleetHealth(t *testing.T) {
	st := status{TableRevision: 9, Edges: []edgeStatus{
		{Node: "a", Revision: 9}, {Node: "b", Revision: 7, Lag: 2}, {Node: "c", Stale: true}, {Node: "d", Silent: true, Stale: true},
	}, Placements: []placement{{ID: "p", Model: "m", Nodes: []string{"a", "b"}, Ready: []string{"a"}}}}
	nodes := []node{{"a", "r"}, {"b", "r"}, {"c", "r"}, {"d", "r"}, {"e", "r"}}
	f := buildFleet([]region{{ID: "r", Latitude: 10, Longitude: 20}}, nodes, st, true,
		[]usageRow{{Model: "m", Requests: 3, CostNanoUSD: 1_500_000_000, CostUSD: "1.5"}})
	want := map[string]string{"a": healthCurrent, "b": healthBehind, "c": healthStale, "d": healthSilent, "e": healthUnknown}
	seen := map[[2]float64]bool{}
	for _, p := range f.PoPs {
		if p.Health != want[p.ID] {
			t.Errorf("PoP %s: %s, want %s", p.ID, p.Health, want[p.ID])
		}
		seen[[2]float64{math.Round(p.X), math.Round(p.Y)}] = true
	}
	if len(seen) != len(nodes) {
		t.Errorf("PoPs of one region overlap: %d places for %d PoPs", len(seen), len(nodes))
	}
	if len(f.Models) != 1 || f.Models[0].Placed != 2 || f.Models[0].Ready != 1 || f.Models[0].Requests != 3 || f.Cost != "1.50" {
		t.Errorf("models %+v, cost %s", f.Models, f.Cost)
	}
}

func TestBuildChartStacks(t *testing.T) {
	now := time.Date(2026, 12, 2, 18, 30, 0, 0, time.UTC)
	from := now.AddDate(0, 0, -2).Truncate(24 * time.Hour)
	rows := []usageRow{
		{Day: "2026-12-01", Tenant: "a", CostNanoUSD: 1e9},
		{Day: "2026-12-01", Tenant: "b", CostNanoUSD: 3e9},
		{Day: "2026-12-02", Tenant: "a", CostNanoUSD: 2e9},
	}
	ch := buildChart(rows, "tenant", "day", from, now)
	if len(ch.Bars) != 3 || len(ch.Legend) != 2 || ch.Max != "4.00" {
		t.Fatalf("chart: %d bars, %d groups, max %s; want 3 days, 2 tenants, max 4.00", len(ch.Bars), len(ch.Legend), ch.Max)
	}
	if len(ch.Bars[0].Parts) != 0 || len(ch.Bars[1].Parts) != 2 || ch.Bars[2].Total != "2.00" {
		t.Errorf("bars %+v", ch.Bars)
	}
	// The tallest bar fills the plot; parts stack without gaps.
	p := ch.Bars[1].Parts
	if math.Abs(p[0].H+p[1].H-(chartBottom-10)) > 0.01 || math.Abs(p[1].Y+p[1].H-p[0].Y) > 0.01 {
		t.Errorf("parts %+v do not stack to the plot's height", p)
	}
}

// TestHTMXMatchesNPM: the embedded htmx is the one package-lock.json
// pins (make ui copies it).
func TestHTMXMatchesNPM(t *testing.T) {
	npm := filepath.Join("..", "..", "ops", "console", "node_modules", "htmx.org", "dist", "htmx.min.js")
	want, err := os.ReadFile(npm)
	if err != nil {
		t.Skipf("no %s (cd ops/console && npm ci): %v", npm, err)
	}
	got, err := staticFS.ReadFile("static/htmx.min.js")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("control/console/static/htmx.min.js differs from ops/console's npm htmx.org: run make ui (%v)", err)
	}
}

// FuzzParseEdges: whatever -console-edges holds, parsing never panics,
// and an edge list the console accepts names only http(s) hosts.
func FuzzParseEdges(f *testing.F) {
	for _, s := range []string{"", "a=http://127.0.0.1:8080", " a=http://h:1/ , b=https://b.example", "x", "=", "a=ftp://x", "a=http://", ",,a=http://h:1,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		edges, err := ParseEdges(s)
		if err != nil {
			return
		}
		cfg := Config{API: noAPI{}, Authorize: func(string) (bool, bool) { return false, false }, Edges: edges}
		if cfg.Validate() != nil {
			return
		}
		for _, e := range edges {
			u, err := url.Parse(e.URL)
			if e.ID == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("accepted edge %+v from %q", e, s)
			}
		}
	})
}

type noAPI struct{}

func (noAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
