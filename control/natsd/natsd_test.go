package natsd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/ports"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/nats-io/nats.go"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func freeAddr(t *testing.T) string {
	t.Helper()
	return ports.Addr(t)
}

const pass = "s3cret-nats-password"

func TestClusterRoutesAndAuth(t *testing.T) {
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var servers []*Server
	for i, r := range routes {
		cfg := DefaultConfig()
		cfg.Name, cfg.Listen, cfg.ClusterListen, cfg.Routes = "n"+string(rune('0'+i)), "127.0.0.1:0", r, routes
		cfg.User, cfg.Password, cfg.Logger = "meridian", pass, log
		s, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
	}
	wait.For(t, 20*time.Second, "a full mesh of routes", func() bool {
		for _, s := range servers {
			if s.NumRoutes() < 2 {
				return false
			}
		}
		return true
	})
	if _, err := nats.Connect(servers[0].ClientURL(), nats.UserInfo("meridian", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if _, err := nats.Connect(servers[0].ClientURL()); err == nil {
		t.Fatal("a client without credentials was accepted")
	}
	sub, err := nats.Connect(servers[0].ClientURL(), nats.UserInfo("meridian", pass))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := nats.Connect(servers[2].ClientURL(), nats.UserInfo("meridian", pass))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	got := make(chan *nats.Msg, 1)
	if _, err := sub.ChanSubscribe("meridian.v1.test", got); err != nil {
		t.Fatal(err)
	}
	sub.Flush()
	// Interest crosses routes asynchronously: publish until it arrives.
	wait.For(t, 10*time.Second, "a message across the cluster", func() bool {
		pub.Publish("meridian.v1.test", []byte("hi"))
		select {
		case <-got:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	for _, s := range servers {
		s.Shutdown()
	}
	if strings.Contains(logs.String(), pass) {
		t.Fatal("a credential reached the logs")
	}
}

func TestConfigNeedsAuth(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); !errors.Is(err, ErrNoAuth) {
		t.Fatalf("no credentials: %v", err)
	}
	cfg.Token = "tok-0123456789abcdef"
	cfg.Listen = "127.0.0.1:0"
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.ClientURL(), nats.Token(cfg.Token))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := nats.Connect(s.ClientURL(), nats.Token("nope")); err == nil {
		t.Fatal("a wrong token was accepted")
	}
}
