package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/cluster"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/testkit/ports"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	return ports.Addr(t)
}

// TestBootstrapExpectAndLeave starts three nodes that find each other
// through -join, writes through each, and stops them with a signal's
// context: each leaves, and the survivors keep serving.
func TestBootstrapExpectAndLeave(t *testing.T) {
	const n = 3
	var http []string
	cfgs := make([]Config, n)
	for range n {
		http = append(http, freeAddr(t))
	}
	for i := range n {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
		cfg.NodeName = fmt.Sprintf("c%d", i)
		cfg.RaftAddr, cfg.HTTPAddr = freeAddr(t), http[i]
		cfg.BootstrapExpect = n
		for j := range n {
			if j != i {
				cfg.Join = append(cfg.Join, "http://"+http[j])
			}
		}
		cfg.AdminTokens = []string{"admin-token-0123456789"}
		cfg.LogLevel = "off"
		cfgs[i] = cfg
	}
	cancels := make([]context.CancelFunc, n)
	done := make([]chan error, n)
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], done[i] = cancel, make(chan error, 1)
		go func() { done[i] <- run(ctx, cfgs[i]) }()
	}
	t.Cleanup(func() {
		for i := range n {
			cancels[i]()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range n {
		cl, err := client.New(client.Config{Addrs: []string{http[i]}, Token: "admin-token-0123456789", RetryTimeout: 40 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Put(ctx, &controlv1.Region{Id: fmt.Sprintf("r%d", i)}, client.WriteOptions{}); err != nil {
			t.Fatalf("write through node %d: %v", i, err)
		}
	}
	cl, _ := client.New(client.Config{Addrs: []string{http[0], http[1], http[2]}, Token: "admin-token-0123456789", RetryTimeout: 40 * time.Second})
	info, err := cl.Cluster(ctx)
	if err != nil || len(info.Servers) != n {
		t.Fatalf("cluster: %+v %v", info, err)
	}
	// Stop the leader: it hands over, so writes continue at once.
	for i := range n {
		if "http://"+http[i] == leaderAPI(info) {
			cancels[i]()
			select {
			case err := <-done[i]:
				if err != nil {
					t.Fatalf("leaving node: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the leader did not stop")
			}
		}
	}
	if _, err := cl.Put(ctx, &controlv1.Region{Id: "after"}, client.WriteOptions{}); err != nil {
		t.Fatalf("write after the leader left: %v", err)
	}
}

func leaderAPI(info *api.ClusterInfo) string {
	for _, s := range info.Servers {
		if s.Leader {
			return s.APIAddr
		}
	}
	return ""
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Fatal("a config with no admin token validated")
	}
	cfg.AdminTokens = []string{"x"}
	cfg.Bootstrap, cfg.BootstrapExpect = true, 3
	if err := cfg.Validate(); err == nil {
		t.Fatal("bootstrap and bootstrap-expect together validated")
	}
}

// TestServesTLS bootstraps a single node serving its API over HTTPS with
// a certificate from the development CA.
func TestServesTLS(t *testing.T) {
	dir := t.TempDir()
	ca, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if err := pki.WriteCA(ca, "test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteNodeCert(ca, certs, "control-1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Bootstrap, cfg.LogLevel = filepath.Join(dir, "data"), true, "off"
	cfg.RaftAddr, cfg.HTTPAddr = freeAddr(t), freeAddr(t)
	cfg.AdminTokens = []string{"admin-token-0123456789"}
	cfg.TLSCert, cfg.TLSKey = filepath.Join(certs, "control-1.crt"), filepath.Join(certs, "control-1.key")
	cfg.TLSCA = filepath.Join(ca, pki.CACertFile)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	defer func() {
		cancel()
		<-done
	}()
	pool, err := pki.LoadPool(cfg.TLSCA)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	cl, _ := client.New(client.Config{Addrs: []string{"https://" + cfg.HTTPAddr}, Token: "admin-token-0123456789", HTTP: hc, RetryTimeout: 30 * time.Second})
	wctx, wcancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer wcancel()
	if _, err := cl.Put(wctx, &controlv1.Region{Id: "eu"}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := cl.Cluster(wctx)
	if err != nil || len(info.Servers) != 1 || info.Servers[0].APIAddr != "https://"+cfg.HTTPAddr {
		t.Fatalf("cluster over TLS: %+v %v", info, err)
	}
	// The web console shares the listener; over TLS its session cookie
	// is Secure as well as HttpOnly and SameSite=Strict.
	ui := &http.Client{Transport: hc.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := ui.PostForm("https://"+cfg.HTTPAddr+"/ui/login", url.Values{"token": {"admin-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Cookies(); resp.StatusCode != http.StatusSeeOther || len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("console login over TLS: %d, cookies %+v", resp.StatusCode, resp.Cookies())
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("the console answered without a Content-Security-Policy")
	}
	plain, _ := client.New(client.Config{Addrs: []string{"https://" + cfg.HTTPAddr}, Token: "admin-token-0123456789", RetryTimeout: 30 * time.Second})
	start := time.Now()
	if _, err := plain.Cluster(wctx); err == nil {
		t.Fatal("a client without the CA trusted the node's certificate")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("a certificate error was retried")
	}
}

// TestDamagedStoreFailsStart: a node whose Raft log does not open does
// not start, and says where, why and the way back.
func TestDamagedStoreFailsStart(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.RaftAddr, cfg.HTTPAddr = freeAddr(t), freeAddr(t)
	cfg.Bootstrap, cfg.AdminTokens, cfg.LogLevel = true, []string{"admin-token-0123456789"}, "off"
	walDir := filepath.Join(cfg.DataDir, "raft", "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(walDir, "wal-meta.db"), bytes.Repeat([]byte{0xa5}, 64*1024), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, cfg)
	if !errors.Is(err, cluster.ErrStoreDamaged) {
		t.Fatalf("started on a damaged log, or failed otherwise: %v", err)
	}
	for _, want := range []string{walDir, "move " + filepath.Join(cfg.DataDir, "raft") + " aside", "snapshot"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// With -tls-client-ca the API requires a client certificate from that
// CA: a caller with the right token but no certificate gets nowhere.
func TestAPIMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if err := pki.WriteCA(ca, "test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"control-1", "operator"} {
		if err := pki.WriteNodeCert(ca, certs, n, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Bootstrap, cfg.LogLevel = filepath.Join(dir, "data"), true, "off"
	cfg.RaftAddr, cfg.HTTPAddr = freeAddr(t), freeAddr(t)
	cfg.AdminTokens = []string{"admin-token-0123456789"}
	cfg.TLSCert, cfg.TLSKey = filepath.Join(certs, "control-1.crt"), filepath.Join(certs, "control-1.key")
	cfg.TLSCA, cfg.TLSClientCA = filepath.Join(ca, pki.CACertFile), filepath.Join(ca, pki.CACertFile)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	defer func() {
		cancel()
		<-done
	}()
	pool, _ := pki.LoadPool(cfg.TLSCA)
	op, err := tls.LoadX509KeyPair(filepath.Join(certs, "operator.crt"), filepath.Join(certs, "operator.key"))
	if err != nil {
		t.Fatal(err)
	}
	with := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{op}}}}
	without := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	wctx, wcancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer wcancel()
	cl, _ := client.New(client.Config{Addrs: []string{"https://" + cfg.HTTPAddr}, Token: "admin-token-0123456789", HTTP: with, RetryTimeout: 30 * time.Second})
	if _, err := cl.Put(wctx, &controlv1.Region{Id: "eu"}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://"+cfg.HTTPAddr+"/v1/control/cluster", nil)
	req.Header.Set("Authorization", "Bearer admin-token-0123456789")
	if resp, err := without.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a caller without a client certificate got %s", resp.Status)
	}
}

// TestDiscoveryAnswersLikeTheAPI: while voters discover each other, a
// client hears the API's own "no leader" code, which the API client
// holds and retries on, and /self is the API's Self.
func TestDiscoveryAnswersLikeTheAPI(t *testing.T) {
	h := cluster.DiscoveryHandler(api.Self{ID: "a", RaftAddr: "127.0.0.1:1"}, 3)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/control/state", nil))
	var e struct{ Error struct{ Code string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusServiceUnavailable || e.Error.Code != api.CodeNoLeader {
		t.Fatalf("during discovery: %d %s; want 503 %s", rec.Code, rec.Body, api.CodeNoLeader)
	}
}
