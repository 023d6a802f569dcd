package consoletest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/console"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// Client keys the fleet holds; keyEU belongs to a tenant kept in the EU.
const (
	keyOpen = "sk-consoletest-open-0123456789ab"
	keyEU   = "sk-consoletest-eu-0123456789abcd"
)

// EnvScreenshots names the folder the screenshots go to; unset, they go
// to a temporary folder (make console-screenshots sets ops/console/screenshots).
const EnvScreenshots = "MERIDIAN_CONSOLE_SCREENSHOTS"

// browserTools finds chromium and the Playwright script's node_modules,
// or says why the test cannot run.
func browserTools(t *testing.T, root string) (chromium, why string) {
	chromium = os.Getenv("MERIDIAN_CHROMIUM")
	if chromium == "" {
		chromium, _ = exec.LookPath("chromium")
	}
	switch {
	case chromium == "":
		return "", "chromium is not installed (apt-get install -y chromium)"
	case !exists(filepath.Join(root, "ops/console/node_modules/playwright-core/package.json")):
		return "", "ops/console/node_modules is missing (cd ops/console && npm ci)"
	}
	if _, err := exec.LookPath("node"); err != nil {
		return "", "node is not installed"
	}
	return chromium, ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestConsoleInChromium(t *testing.T) {
	root := enginetest.RepoRoot(t)
	chromium, why := browserTools(t, root)
	if why != "" {
		t.Skip("SKIPPED: the web console's browser test needs " + why)
	}
	edgeEU, edgeUS := ports.Addr(t), ports.Addr(t)
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, Usage: true, Console: true,
		ConsoleEdges: []console.Edge{{ID: "edge-eu", URL: "http://" + edgeEU}, {ID: "edge-us", URL: "http://" + edgeUS}}})
	leader := c.Leader()
	mockEU, mockUS := startMock(t), startMock(t)
	writeFleet(t, leader, mockEU, mockUS)
	startEdge(t, c, "edge-eu", "eu-west", edgeEU)
	startEdge(t, c, "edge-us", "us-east", edgeUS)

	// Some traffic, so that the map and spend show it.
	for i := range 6 {
		key := keyOpen
		if i%3 == 0 {
			key = keyEU
		}
		for _, e := range []string{edgeEU, edgeUS} {
			chat(t, e, "chat", key)
		}
	}
	wait.For(t, 60*time.Second, "both edges reporting and the usage aggregated", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, b, _, err := leader.Do(ctx, http.MethodGet, "/v1/control/usage", controltest.ReadToken, nil)
		if err != nil || !strings.Contains(string(b), `"requests":12`) {
			return false
		}
		_, b, _, err = leader.Do(ctx, http.MethodGet, "/v1/control/distribution", controltest.ReadToken, nil)
		return err == nil && strings.Count(string(b), `"silent": false`) == 2
	})

	shots := os.Getenv(EnvScreenshots)
	if shots == "" {
		shots = t.TempDir()
	} else if !filepath.IsAbs(shots) {
		shots = filepath.Join(root, shots)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e.mjs")
	cmd.Dir = filepath.Join(root, "ops/console")
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+leader.URL, "ADMIN_TOKEN="+controltest.AdminToken,
		"READ_TOKEN="+controltest.ReadToken, "CHROMIUM="+chromium, "SCREENSHOT_DIR="+shots)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("ops/console/e2e.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("the browser test failed: %v", err)
	}
	for _, name := range []string{"login", "map", "explain", "keys", "spend", "routes", "placements"} {
		if fi, err := os.Stat(filepath.Join(shots, name+".png")); err != nil || fi.Size() < 1000 {
			t.Errorf("screenshot %s.png: %v", name, err)
		}
	}
}

func startMock(t *testing.T) string {
	t.Helper()
	mock, err := providermock.New(providermock.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeFleet writes the fleet through the control API: three regions,
// a node in each (the one in ap-south never starts, so the map shows a
// PoP that never reported), providers in two, and a route the explorer
// orders by distance.
func writeFleet(t *testing.T, m *controltest.Member, mockEU, mockUS string) {
	t.Helper()
	put := func(kind, id string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, resp, _, err := m.Do(ctx, http.MethodPut, "/v1/control/"+kind+"/"+id, controltest.AdminToken, bytes.NewReader(b), "Content-Type", "application/json")
		if err != nil || code != http.StatusOK {
			t.Fatalf("put %s %s: %d %s (%v)", kind, id, code, resp, err)
		}
	}
	for _, r := range []struct {
		id, name string
		lat, lon float64
	}{{"eu-west", "Dublin", 53.35, -6.26}, {"us-east", "Virginia", 38.9, -77.4}, {"ap-south", "Mumbai", 19.07, 72.88}} {
		put("regions", r.id, map[string]any{"id": r.id, "name": r.name, "latitude": r.lat, "longitude": r.lon})
	}
	for _, n := range [][2]string{{"edge-eu", "eu-west"}, {"edge-us", "us-east"}, {"edge-ap", "ap-south"}} {
		put("nodes", n[0], map[string]any{"id": n[0], "region": n[1]})
	}
	put("providers", "mock-eu", map[string]any{"id": "mock-eu", "kind": "openai", "base_url": mockEU + "/v1", "region": "eu-west"})
	put("providers", "mock-us", map[string]any{"id": "mock-us", "kind": "openai", "base_url": mockUS + "/v1", "region": "us-east"})
	put("models", "chat", map[string]any{"id": "chat"})
	put("models", "summarize", map[string]any{"id": "summarize"})
	// A local model placed on edges that run no engine: placed, never ready.
	put("models", "tiny", map[string]any{"id": "tiny", "local": true, "gguf": "file:///models/tiny.gguf"})
	put("placements", "tiny-eu", map[string]any{"id": "tiny-eu", "model": "tiny", "region": "eu-west", "desired": 1})
	put("placements", "tiny-ap", map[string]any{"id": "tiny-ap", "model": "tiny", "node": "edge-ap", "desired": 1})
	put("routes", "chat", map[string]any{"model": "chat", "strategy": "nearest",
		"targets": []any{map[string]any{"provider": "mock-us", "model": "gpt-4o-mini"}, map[string]any{"provider": "mock-eu", "model": "gpt-4o-mini"}}})
	put("routes", "summarize", map[string]any{"model": "summarize", "targets": []any{map[string]any{"provider": "mock-us", "model": "gpt-4o-mini"}}})
	for _, p := range []string{"mock-eu", "mock-us"} {
		put("prices", p+"/chat", map[string]any{"model": "chat", "provider": p, "input": 150, "output": 600})
	}
	put("tenants", "open", map[string]any{"id": "open"})
	put("tenants", "eu-only", map[string]any{"id": "eu-only", "allowed_regions": []string{"eu-west"}})
	put("keys", "key-open", map[string]any{"id": "key-open", "tenant": "open", "hash": keyHash(keyOpen)})
	put("keys", "key-eu", map[string]any{"id": "key-eu", "tenant": "eu-only", "hash": keyHash(keyEU)})
}

// startEdge starts an edge following the control plane on addr, with
// no engine, gossip or links: the console needs its table, its reports
// and its dry run.
func startEdge(t *testing.T, c *controltest.Cluster, id, region, addr string) {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.Listen = id, region, addr
	cfg.DrainTimeout = 2 * time.Second
	cfg.Control.NATSURLs = []string{c.Leader().NATSURL()}
	cfg.Control.Token, cfg.Control.TablePublicKey = controltest.NATSToken, c.TableKey()
	cfg.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
	cfg.Control.StaleAfter = 20
	n, err := node.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("edge %s: %v", id, err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("edge %s did not stop", id)
		}
	})
	wait.For(t, 60*time.Second, id+" ready on the control plane's table", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func chat(t *testing.T, addr, model, key string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello"}]}`, model)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat %s on %s: %d %s", model, addr, resp.StatusCode, b)
	}
}
