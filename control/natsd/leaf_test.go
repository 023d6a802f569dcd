package natsd

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/shared/tablewire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

const leafPass = "leaf-s3cret"

func hubAndLeaf(t *testing.T, hubPassword string, ids Identities) (hub, leaf *Server) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.Listen, cfg.Token, cfg.LeafListen, cfg.LeafPassword = "hub", "127.0.0.1:0", pass, "127.0.0.1:0", leafPass
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	hub, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	if hub.LeafAddr() == "" {
		t.Fatal("no leaf listener address")
	}
	lcfg := DefaultConfig()
	lcfg.Name, lcfg.Listen, lcfg.Token, lcfg.Hub, lcfg.HubPassword = "leaf", "127.0.0.1:0", "leaf-local-token", []string{hub.LeafAddr()}, hubPassword
	lcfg.Identities, lcfg.PingInterval, lcfg.MaxPingsOut = ids, 200*time.Millisecond, 2
	lcfg.Logger = cfg.Logger
	leaf, err = Start(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leaf.Shutdown)
	return hub, leaf
}

// An edge on a leaf hears the hub's tables and reaches the hub with its
// own report, and nothing it may not send on the hub gets through the
// leaf either: not from the edge (its own permissions, on the leaf), and
// not from a client with every right on the leaf (the leaf connection's
// permissions, on the hub).
func TestLeafCarriesOnlyWhatEdgesMay(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	hub, leaf := hubAndLeaf(t, leafPass, &idMap{m: map[string]string{pub: "edge-1"}})
	wait.For(t, 10*time.Second, "the leaf to connect to the hub", leaf.HubConnected)
	if hub.NumLeafNodes() != 1 {
		t.Fatalf("hub sees %d leaf connections", hub.NumLeafNodes())
	}

	control, err := nats.Connect(hub.ClientURL(), nats.Token(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	got := make(chan *nats.Msg, 64)
	for _, s := range []string{tablewire.SubjectHeartbeat, tablewire.SubjectUpdate, tablewire.SubjectApplied + ".>", usagewire.UsageSubjects} {
		if _, err := control.ChanSubscribe(s, got); err != nil {
			t.Fatal(err)
		}
	}
	control.Flush()

	edge, errs := edgeConn(t, leaf.ClientURL(), kp, "edge-1")
	if edge == nil {
		t.Fatal("the edge could not connect to the leaf")
	}
	beats, _ := edge.SubscribeSync(tablewire.SubjectHeartbeat)
	edge.Flush()
	wait.For(t, 10*time.Second, "the hub's heartbeat to reach the edge on the leaf", func() bool {
		control.Publish(tablewire.SubjectHeartbeat, []byte("beat"))
		control.Flush()
		m, err := beats.NextMsg(200 * time.Millisecond)
		return err == nil && string(m.Data) == "beat"
	})
	edge.Publish(tablewire.SubjectHeartbeat, []byte("forged by an edge"))
	edge.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("edge error = %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leaf did not refuse an edge's heartbeat")
	}

	// A client with every right on the leaf still cannot publish a
	// heartbeat or a table into the hub.
	local, err := nats.Connect(leaf.ClientURL(), nats.Token("leaf-local-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	local.Publish(tablewire.SubjectHeartbeat, []byte("forged on the leaf"))
	local.Publish(tablewire.SubjectUpdate, []byte("forged table on the leaf"))
	local.Flush()
	wait.For(t, 10*time.Second, "the edge's report to reach the hub", func() bool {
		edge.Publish(tablewire.ReportSubject("edge-1"), []byte("report"))
		edge.Publish(usagewire.UsageSubject("edge-1"), []byte("usage"))
		edge.Flush()
		seen := map[string]bool{}
		deadline := time.After(300 * time.Millisecond)
		for {
			select {
			case m := <-got:
				if m.Subject == tablewire.SubjectUpdate || string(m.Data) == "forged on the leaf" || string(m.Data) == "forged by an edge" {
					t.Fatalf("a forged message reached the hub: %s %q", m.Subject, m.Data)
				}
				seen[string(m.Data)] = true
			case <-deadline:
				return seen["report"] && seen["usage"]
			}
		}
	})
}

// A leaf with the wrong credential never joins the hub.
func TestLeafWithWrongCredentialStaysOut(t *testing.T) {
	hub, leaf := hubAndLeaf(t, "not-the-password", nil)
	time.Sleep(0) // the connection attempt is asynchronous; poll for a bounded while
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if leaf.HubConnected() || hub.NumLeafNodes() > 0 {
			t.Fatal("a leaf with the wrong credential connected")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLeafConfigValidate(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Token = pass
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"leaf listener without credential", func(c *Config) { c.LeafListen = "127.0.0.1:7422" }, ErrNoLeafAuth},
		{"plain leaf listener beyond loopback", func(c *Config) { c.LeafListen, c.LeafPassword = "10.0.0.1:7422", leafPass }, ErrPlainNonLoopback},
		{"hub without credential", func(c *Config) { c.Hub = []string{"127.0.0.1:7422"} }, ErrNoLeafAuth},
		{"plain hub beyond loopback", func(c *Config) { c.Hub, c.HubPassword = []string{"10.0.0.1:7422"}, leafPass }, ErrPlainNonLoopback},
		{"leaf with JetStream", func(c *Config) { c.Hub, c.HubPassword, c.StoreDir = []string{"127.0.0.1:7422"}, leafPass, "/tmp/x" }, nil},
		{"hub not host:port", func(c *Config) { c.Hub, c.HubPassword = []string{"nats://x"}, leafPass }, nil},
	} {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
	}
	c := base()
	c.LeafListen, c.LeafPassword = "127.0.0.1:7422", leafPass
	if err := c.Validate(); err != nil {
		t.Errorf("loopback leaf listener: %v", err)
	}
}
