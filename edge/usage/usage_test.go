package usage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/usagewire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// bus is an embedded NATS server with JetStream and the usage stream,
// created as the control plane creates it.
type bus struct {
	ns *server.Server
	nc *nats.Conn
	js jetstream.JetStream
}

func newBus(t *testing.T) *bus {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: usagewire.Stream, Subjects: []string{usagewire.UsageSubjects},
		Duplicates: usagewire.DuplicateWindow, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	return &bus{ns: ns, nc: nc, js: js}
}

// records returns the request IDs of every record in the stream.
func (b *bus) records(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, usagewire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var rec usagev1.Record
		if err := proto.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if m.Subject != usagewire.UsageSubject("edge-a") {
			t.Fatalf("record on %s", m.Subject)
		}
		ids = append(ids, rec.RequestId)
	}
	return ids
}

func newRecorder(t *testing.T, dir string) *Recorder {
	t.Helper()
	c := DefaultConfig()
	c.Node, c.Dir = "edge-a", dir
	c.Retry.Base, c.Retry.Max = 10*time.Millisecond, 100*time.Millisecond
	c.AckTimeout = 2 * time.Second
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rec(id string) *usagev1.Record {
	return &usagev1.Record{RequestId: id, Tenant: "t1", Key: "k1", Model: "m", TokensIn: 3, TokensOut: 5, Status: 200}
}

func waitRecords(t *testing.T, b *bus, want int) []string {
	t.Helper()
	var ids []string
	wait.For(t, 15*time.Second, fmt.Sprintf("%d records in the stream", want), func() error {
		ids = b.records(t)
		if len(ids) != want {
			return fmt.Errorf("%d records", len(ids))
		}
		return nil
	})
	return ids
}

func TestRecordsReachTheStreamOnce(t *testing.T) {
	b := newBus(t)
	dir := t.TempDir()
	r := newRecorder(t, dir)
	defer r.Close()
	if err := r.Start(b.nc); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		r.Record(rec(fmt.Sprintf("req-%d", i)), Labels{Tenant: "t1", Model: "m"})
	}
	// A record sent again (a retry after a lost ack) is dropped by its
	// request ID.
	r.Record(rec("req-7"), Labels{Tenant: "t1", Model: "m"})
	ids := waitRecords(t, b, 50)
	for i, id := range ids {
		if id != fmt.Sprintf("req-%d", i) {
			t.Fatalf("record %d is %s", i, id)
		}
	}
	wait.For(t, 10*time.Second, "the spool to empty", func() error {
		st, err := os.Stat(filepath.Join(dir, SpoolFile))
		if err != nil {
			return err
		}
		if st.Size() != 0 || r.Pending() != 0 {
			return fmt.Errorf("spool %d bytes, %d pending", st.Size(), r.Pending())
		}
		return nil
	})
	if ids := b.records(t); len(ids) != 50 {
		t.Fatalf("%d records in the stream after the duplicate was acked, want 50", len(ids))
	}
}

// TestSpoolSurvivesDeadBusAndRestart: the bus dies, records keep coming
// and are spooled; the edge stops and starts again against a bus that
// is back, and every record arrives once.
func TestSpoolSurvivesDeadBusAndRestart(t *testing.T) {
	b := newBus(t)
	dir := t.TempDir()
	r := newRecorder(t, dir)
	if err := r.Start(b.nc); err != nil {
		t.Fatal(err)
	}
	r.Record(rec("before"), Labels{})
	waitRecords(t, b, 1)
	// The stream has it; wait for the ack too, or the record stays in
	// the spool and is sent again (to a new bus here, which cannot
	// drop it as a duplicate the way the same stream would).
	wait.For(t, 10*time.Second, "the first record's ack", func() error {
		if n := r.Pending(); n != 0 {
			return fmt.Errorf("%d pending", n)
		}
		return nil
	})
	b.ns.Shutdown()
	for i := range 20 {
		r.Record(rec(fmt.Sprintf("dark-%d", i)), Labels{})
	}
	wait.For(t, 10*time.Second, "the records to be spooled", func() error {
		if n := r.Pending(); n != 20 {
			return fmt.Errorf("%d pending", n)
		}
		return nil
	})
	r.Close()
	st, err := os.Stat(filepath.Join(dir, SpoolFile))
	if err != nil || st.Size() == 0 {
		t.Fatalf("spool after close: %v, %v", st, err)
	}

	b2 := newBus(t)
	r2 := newRecorder(t, dir)
	defer r2.Close()
	if n := r2.Pending(); n != 20 {
		t.Fatalf("restarted recorder holds %d records, want 20", n)
	}
	if err := r2.Start(b2.nc); err != nil {
		t.Fatal(err)
	}
	ids := waitRecords(t, b2, 20)
	if ids[0] != "dark-0" || ids[19] != "dark-19" {
		t.Fatalf("records %v", ids)
	}
}

// TestRestartResendIsDeduplicated: an edge that died after the acks but
// before emptying its spool sends those records again; JetStream keeps
// one of each.
func TestRestartResendIsDeduplicated(t *testing.T) {
	b := newBus(t)
	dir := t.TempDir()
	var frames []byte
	for i := range 5 {
		p, _ := proto.Marshal(rec(fmt.Sprintf("req-%d", i)))
		frames = appendFrame(frames, p)
	}
	if err := os.WriteFile(filepath.Join(dir, SpoolFile), frames, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := newRecorder(t, dir)
		if err := r.Start(b.nc); err != nil {
			t.Fatal(err)
		}
		waitRecords(t, b, 5)
		wait.For(t, 10*time.Second, "nothing pending", func() bool { return r.Pending() == 0 })
		r.Close()
		os.WriteFile(filepath.Join(dir, SpoolFile), frames, 0o600) // as if the edge died before emptying it
	}
	if ids := waitRecords(t, b, 5); len(ids) != 5 {
		t.Fatalf("records %v", ids)
	}
}
