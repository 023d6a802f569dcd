package main

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

const (
	testAdmin = "admin-token-0123456789"
	testNATS  = "nats-token-0123456789abcdef"
)

// startNode runs one bootstrapped control node until the test ends.
func startNode(t *testing.T, edit func(*Config)) string {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.RaftAddr, cfg.HTTPAddr = freeAddr(t), freeAddr(t)
	cfg.Bootstrap, cfg.AdminTokens, cfg.LogLevel = true, []string{testAdmin}, "off"
	cfg.NATS.Token = testNATS
	edit(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("control node did not stop")
		}
	})
	return cfg.HTTPAddr
}

// followEdge starts an edge table client on natsURL and returns its
// applied revision.
func followEdge(t *testing.T, natsURL, httpAddr string) *atomic.Uint64 {
	var rev atomic.Uint64
	cl, err := client.New(client.Config{Addrs: []string{"http://" + httpAddr}, Token: testAdmin, RetryTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var key *api.TableKey
	wait.For(t, 30*time.Second, "the table key", func() bool {
		key, err = cl.TableKey(context.Background())
		return err == nil
	})
	pub, err := tablewire.ParsePublicKey(key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	scfg := tablesync.DefaultConfig()
	scfg.NodeID, scfg.Region, scfg.URLs, scfg.Token = "edge-e2e", "eu", []string{natsURL}, testNATS
	scfg.ReportInterval, scfg.RetryMin, scfg.RetryMax = 200*time.Millisecond, 50*time.Millisecond, 500*time.Millisecond
	scfg.Resolver.Getenv = func(string) string { return "sk" }
	scfg.Apply = func(tab *table.Table) error { rev.Store(tab.Revision); return tab.Validate() }
	scfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	scfg.TableKeys, scfg.ClusterID = []ed25519.PublicKey{pub}, key.ClusterID
	s, err := tablesync.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &rev
}

func writeRoute(t *testing.T, httpAddr string) uint64 {
	cl, err := client.New(client.Config{Addrs: []string{httpAddr}, Token: testAdmin, RetryTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idx, err := cl.Batch(ctx, []proto.Message{
		&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_OPENAI_API_KEY"},
		&controlv1.Model{Id: "gpt-4o"},
		&controlv1.Route{Model: "gpt-4o", Targets: []*controlv1.Target{{Provider: "oai"}}},
	}, nil, client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func get(t *testing.T, url, token string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The node's embedded NATS server carries the table to an edge; the
// distribution status and the metrics are served beside the API.
func TestEmbeddedNATSDistributesTheTable(t *testing.T) {
	natsAddr := freeAddr(t)
	httpAddr := startNode(t, func(c *Config) { c.NATS.Listen = natsAddr })
	rev := followEdge(t, "nats://"+natsAddr, httpAddr)
	idx := writeRoute(t, httpAddr)
	wait.For(t, 30*time.Second, "the edge on the new table", func() bool { return rev.Load() >= idx })
	wait.For(t, 10*time.Second, "the edge in the status", func() bool {
		code, body := get(t, "http://"+httpAddr+"/v1/control/distribution", testAdmin)
		return code == 200 && strings.Contains(body, `"node": "edge-e2e"`)
	})
	if code, _ := get(t, "http://"+httpAddr+"/v1/control/distribution", ""); code != http.StatusUnauthorized {
		t.Fatalf("status without a token: %d", code)
	}
	if code, _ := get(t, "http://"+httpAddr+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d", code)
	}
	// One /metrics for the whole node: distribution, Raft and the API.
	_, body := get(t, "http://"+httpAddr+"/metrics", testAdmin)
	for _, name := range []string{"meridian_control_table_revision", "meridian_control_raft_leader 1", `meridian_control_writes_total{outcome="ok"}`, "go_goroutines"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// -nats-url: the node publishes through an existing NATS server, and
// embeds none.
func TestExistingNATSCluster(t *testing.T) {
	ncfg := natsd.DefaultConfig()
	ncfg.Listen, ncfg.Token = "127.0.0.1:0", testNATS
	ncfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, err := natsd.Start(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	httpAddr := startNode(t, func(c *Config) { c.NATS.NATSURLs = []string{ns.ClientURL()} })
	rev := followEdge(t, ns.ClientURL(), httpAddr)
	idx := writeRoute(t, httpAddr)
	wait.For(t, 30*time.Second, "the edge on the new table", func() bool { return rev.Load() >= idx })
}
