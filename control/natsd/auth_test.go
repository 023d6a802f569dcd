package natsd

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

type idMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (i *idMap) EdgeByKey(pub string) (string, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	n, ok := i.m[pub]
	return n, ok
}

func edgeConn(t *testing.T, url string, kp nkeys.KeyPair, node string) (*nats.Conn, <-chan error) {
	t.Helper()
	pub, _ := kp.PublicKey()
	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(tablewire.InboxPrefix(node)),
		nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		return nil, nil
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func TestEdgeIdentityCannotPublishTables(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	other, _ := nkeys.CreateUser()
	ids := &idMap{m: map[string]string{pub: "edge-1"}}
	cfg := DefaultConfig()
	cfg.Listen, cfg.Token, cfg.Identities = "127.0.0.1:0", pass, ids
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()

	control, err := nats.Connect(s.ClientURL(), nats.Token(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	got := make(chan *nats.Msg, 64)
	for _, subj := range []string{tablewire.SubjectUpdate, tablewire.SubjectHeartbeat, tablewire.SubjectApplied + ".>"} {
		if _, err := control.ChanSubscribe(subj, got); err != nil {
			t.Fatal(err)
		}
	}
	control.Flush()

	if nc, _ := edgeConn(t, s.ClientURL(), other, "edge-2"); nc != nil {
		t.Fatal("an unregistered nkey connected")
	}
	edge, errs := edgeConn(t, s.ClientURL(), kp, "edge-1")
	if edge == nil {
		t.Fatal("the registered edge could not connect")
	}
	// The edge may read tables...
	tables, err := edge.SubscribeSync(tablewire.SubjectUpdate)
	if err != nil {
		t.Fatal(err)
	}
	edge.Flush()
	// ...but a table, a heartbeat or another edge's report it sends is
	// refused by the server and reaches nobody.
	edge.Publish(tablewire.SubjectUpdate, []byte("forged table"))
	edge.Publish(tablewire.SubjectHeartbeat, []byte("forged heartbeat"))
	edge.Publish(tablewire.ReportSubject("edge-2"), []byte("forged report"))
	edge.Publish(tablewire.ReportSubject("edge-1"), []byte("own report"))
	edge.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("edge error = %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not refuse the forged publishes")
	}
	control.Publish(tablewire.SubjectUpdate, []byte("real table"))
	control.Flush()
	m, err := tables.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "real table" {
		t.Fatalf("edge got %v, %v; want the control plane's table", m, err)
	}
	deadline := time.After(5 * time.Second)
	var seen []string
	for len(seen) < 2 {
		select {
		case m := <-got:
			seen = append(seen, string(m.Data))
		case <-deadline:
			t.Fatalf("control saw %q; want the own report and the real table", seen)
		}
	}
	for _, d := range seen {
		if d != "own report" && d != "real table" {
			t.Fatalf("a forged message got through: %q (all: %q)", d, seen)
		}
	}
	// Subscribing to another edge's inbox is refused too.
	if _, err := edge.SubscribeSync(tablewire.InboxPrefix("edge-2") + ".x"); err == nil {
		edge.Flush()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("subscribe error = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscribing to another edge's inbox was not refused")
		}
	}

	// Revocation closes the live connection and refuses new ones.
	ids.mu.Lock()
	delete(ids.m, pub)
	ids.mu.Unlock()
	if n := s.Refresh(); n != 1 {
		t.Fatalf("Refresh closed %d connections, want 1", n)
	}
	wait.For(t, 5*time.Second, "the revoked edge's connection to close", edge.IsClosed)
	if nc, _ := edgeConn(t, s.ClientURL(), kp, "edge-1"); nc != nil {
		t.Fatal("a revoked nkey connected")
	}
	if !control.IsConnected() {
		t.Fatal("Refresh closed the control connection")
	}
}

func TestPlainListenerBeyondLoopbackRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.Token = "0.0.0.0:4222", pass
	if err := cfg.Validate(); !errors.Is(err, ErrPlainNonLoopback) {
		t.Fatalf("Validate = %v, want ErrPlainNonLoopback", err)
	}
	cfg.Listen = "[::1]:4222"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("loopback listener: %v", err)
	}
}

func TestPlainClusterListenerBeyondLoopbackRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Token, cfg.ClusterListen = pass, "10.1.2.3:6222"
	if err := cfg.Validate(); !errors.Is(err, ErrPlainNonLoopback) {
		t.Fatalf("Validate = %v, want ErrPlainNonLoopback", err)
	}
	cfg.ClusterListen = "127.0.0.1:6222"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("loopback route listener: %v", err)
	}
}

func TestRoutesOverMutualTLS(t *testing.T) {
	ca, err := pki.NewCA("routes", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	routes := []string{freeAddr(t), freeAddr(t)}
	var servers []*Server
	for i, r := range routes {
		cert, err := ca.IssueServer("ctl-"+string(rune('a'+i)), []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Name, cfg.Listen, cfg.ClusterListen, cfg.Routes, cfg.Token = "n"+string(rune('0'+i)), "127.0.0.1:0", r, routes, pass
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.ClusterTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), ClientCAs: ca.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
		s, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		servers = append(servers, s)
	}
	wait.For(t, 10*time.Second, "the TLS route", func() bool { return servers[0].NumRoutes() > 0 && servers[1].NumRoutes() > 0 })
}
