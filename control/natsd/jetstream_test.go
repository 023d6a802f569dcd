package natsd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/usagewire"
)

// TestEdgePublishesUsageToJetStreamOnly: an edge's nkey may publish its
// own usage records to the stream and get JetStream's acknowledgement in
// its own inbox, but may not publish as another edge nor use the
// JetStream API (purge, delete, read).
func TestEdgePublishesUsageToJetStreamOnly(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	ids := &idMap{m: map[string]string{pub: "edge-1"}}
	cfg := DefaultConfig()
	cfg.Listen, cfg.Token, cfg.Identities, cfg.StoreDir = "127.0.0.1:0", pass, ids, t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if on, clustered := s.JetStream(); !on || clustered || s.JetStreamPeers() != 1 {
		t.Fatalf("JetStream enabled %v clustered %v peers %d", on, clustered, s.JetStreamPeers())
	}

	control, err := nats.Connect(s.ClientURL(), nats.Token(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cjs, _ := jetstream.New(control)
	stream, err := cjs.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: usagewire.Stream, Subjects: []string{usagewire.UsageSubjects}, Storage: jetstream.FileStorage,
		Duplicates: usagewire.DuplicateWindow,
	})
	if err != nil {
		t.Fatal(err)
	}

	edge, errs := edgeConn(t, s.ClientURL(), kp, "edge-1")
	if edge == nil {
		t.Fatal("the registered edge could not connect")
	}
	js, err := jetstream.New(edge)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg := nats.NewMsg(usagewire.UsageSubject("edge-1"))
		msg.Data = []byte(fmt.Sprint("record ", i%2))
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprint("req-", i%2)))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.Stream != usagewire.Stream || ack.Duplicate != (i == 2) {
			t.Fatalf("publish %d: ack %+v", i, ack)
		}
	}
	// Publishing as another edge: refused by the server, so no ack.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	if _, err := js.Publish(short, usagewire.UsageSubject("edge-2"), []byte("forged")); err == nil {
		t.Fatal("an edge published another edge's usage")
	}
	cancelShort()
	// The JetStream API is closed to it: no purge, no delete, no read.
	for name, call := range map[string]func(context.Context) error{
		"purge": func(c context.Context) error {
			st, err := js.Stream(c, usagewire.Stream)
			if err != nil {
				return err
			}
			return st.Purge(c)
		},
		"delete": func(c context.Context) error { return js.DeleteStream(c, usagewire.Stream) },
		"create consumer": func(c context.Context) error {
			_, err := js.CreateOrUpdateConsumer(c, usagewire.Stream, jetstream.ConsumerConfig{Durable: "steal"})
			return err
		},
	} {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := call(c); err == nil {
			t.Errorf("edge could %s", name)
		}
		cancel()
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("edge error = %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not report a permissions violation")
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want the edge's 2 (one deduplicated)", info.State.Msgs)
	}
	// Edges hear each other's limit reports, and publish only their own.
	sub, err := edge.SubscribeSync(usagewire.LimitsSubjects)
	if err != nil {
		t.Fatal(err)
	}
	edge.Flush()
	control.Publish(usagewire.LimitsSubject("edge-9"), []byte("report"))
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "report" {
		t.Fatalf("limit report: %v %v", m, err)
	}
}

func TestJetStreamClustersOverRoutes(t *testing.T) {
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var servers []*Server
	for i, r := range routes {
		cfg := DefaultConfig()
		cfg.Name, cfg.Listen, cfg.ClusterListen, cfg.Routes, cfg.Token = fmt.Sprint("n", i), "127.0.0.1:0", r, routes, pass
		cfg.StoreDir = t.TempDir()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		s, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		servers = append(servers, s)
	}
	if _, clustered := servers[0].JetStream(); !clustered || servers[0].JetStreamPeers() != 3 {
		t.Fatalf("clustered %v peers %d", clustered, servers[0].JetStreamPeers())
	}
	nc, err := nats.Connect(servers[2].ClientURL(), nats.Token(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// The meta group elects a leader after the routes come up; until
	// then stream creation fails.
	wait.For(t, 30*time.Second, "a replicated stream", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: usagewire.Stream, Subjects: []string{usagewire.UsageSubjects},
			Storage: jetstream.FileStorage, Replicas: 3})
		return err
	})
}
