package distribution

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/publish"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

var quiet = slog.New(slog.DiscardHandler)

const (
	natsToken = "distribution-test-token-0123456789"
	readToken = "distribution-read-token-0123456789"
)

func singleNode(t *testing.T) *cluster.Node {
	cfg := cluster.DefaultConfig()
	cfg.DataDir, cfg.Bootstrap, cfg.Logger = t.TempDir(), true, quiet
	cfg.RaftAddr, cfg.APIAddr = "127.0.0.1:0", "http://127.0.0.1:0"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	n, err := cluster.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	wait.For(t, 20*time.Second, "a leader", func() bool { return n.IsLeader() && n.ConsistentRead() == nil })
	return n
}

// A control node with an embedded TLS NATS server: an edge that trusts
// the CA gets the table, its report shows in the status handler, and the
// handler wants a token.
func TestEmbeddedTLSServerAndStatus(t *testing.T) { testEmbedded(t, true) }

// Without TLS, the node talks to its own server in process.
func TestEmbeddedServerInProcess(t *testing.T) { testEmbedded(t, false) }

func testEmbedded(t *testing.T, withTLS bool) {
	dir := t.TempDir()
	if err := pki.WriteCA(dir, "meridian-test", time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteNodeCert(dir, dir, "ctl-1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	node := singleNode(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.Token, cfg.ReadTokens, cfg.Logger = "127.0.0.1:0", natsToken, []string{readToken}, quiet
	if withTLS {
		cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = filepath.Join(dir, "ctl-1.crt"), filepath.Join(dir, "ctl-1.key"), filepath.Join(dir, pki.CACertFile)
	}
	cfg.HeartbeatInterval = 100 * time.Millisecond
	d, err := Start(cfg, node)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if withTLS != strings.HasPrefix(d.ClientURL(), "tls://") {
		t.Fatalf("client URL %s", d.ClientURL())
	}
	res, err := node.Apply(fsm.TypeWrite, &controlv1.Write{RequestId: "r1", Ops: []*controlv1.Op{
		fsm.PutOp(&controlv1.Provider{Id: "oai", Preset: "openai", SecretRef: "env:MERIDIAN_SECRET_K"}),
		fsm.PutOp(&controlv1.Model{Id: "gpt-4o"}),
		fsm.PutOp(&controlv1.Route{Model: "gpt-4o", Targets: []*controlv1.Target{{Provider: "oai"}}}),
	}})
	if err != nil || res.GetCode() != "" {
		t.Fatal(err, res)
	}

	var rev atomic.Uint64
	scfg := tablesync.DefaultConfig()
	scfg.NodeID, scfg.URLs, scfg.Token = "edge-tls", []string{d.ClientURL()}, natsToken
	if withTLS {
		scfg.TLS = &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	}
	scfg.ReportInterval, scfg.Logger = 200*time.Millisecond, quiet
	scfg.Resolver.Getenv = func(string) string { return "sk" }
	scfg.Apply = func(tab *table.Table) error { rev.Store(tab.Revision); return tab.Validate() }
	var pub ed25519.PublicKey
	for deadline := time.Now().Add(20 * time.Second); pub == nil; time.Sleep(20 * time.Millisecond) {
		if id := node.FSM().State().Identity(); id != nil {
			pub = id.GetPublicKey()
		} else if time.Now().After(deadline) {
			t.Fatal("no table-signing key")
		}
	}
	scfg.TableKeys = []ed25519.PublicKey{pub}
	s, err := tablesync.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait.For(t, 10*time.Second, "the edge on the table", func() bool { return rev.Load() >= res.GetIndex() })

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	wait.For(t, 10*time.Second, "the edge in the status", func() bool {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+StatusPath, nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st publish.Status
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		return st.Leader && len(st.Edges) == 1 && st.Edges[0].Node == "edge-tls" && st.Edges[0].Revision == st.TableRevision
	})
}

func TestConfigRefusesOpenBus(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Fatal("no credentials accepted")
	}
	cfg.Token = natsToken
	cfg.NATSURLs = []string{"nats://u:p@h:4222"}
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "u:p") {
		t.Fatalf("credentials in a URL: %v", err)
	}
}
