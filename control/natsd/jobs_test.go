package natsd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/meridian-mesh/meridian/shared/jobswire"
)

// TestEdgeUsesBatchStreamsOnly: an edge's nkey can do everything
// edge/jobs does with the batch streams (files in the object store,
// records and results in the buckets, lines through the work queue, a
// purge), and cannot delete or reconfigure them.
func TestEdgeUsesBatchStreamsOnly(t *testing.T) {
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
	control, err := nats.Connect(s.ClientURL(), nats.Token(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cjs, _ := jetstream.New(control)
	if err := jobswire.Ensure(ctx, cjs, 1); err != nil {
		t.Fatal(err)
	}

	edge, _ := edgeConn(t, s.ClientURL(), kp, "edge-1")
	if edge == nil {
		t.Fatal("the registered edge could not connect")
	}
	js, _ := jetstream.New(edge)
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("edge could not %s: %v", what, err)
		}
	}
	files, err := js.ObjectStore(ctx, jobswire.Files)
	step("bind the object store", err)
	data := bytes.Repeat([]byte("line\n"), 100_000) // several chunks
	_, err = files.Put(ctx, jetstream.ObjectMeta{Name: "file-1", Metadata: map[string]string{"owner": "acme"}}, bytes.NewReader(data))
	step("put a file", err)
	_, err = files.Put(ctx, jetstream.ObjectMeta{Name: "file-1"}, bytes.NewReader(data[:10]))
	step("replace a file", err)
	info, err := files.GetInfo(ctx, "file-1")
	step("read a file's info", err)
	got, err := files.GetBytes(ctx, "file-1")
	step("read a file", err)
	if info.Size != 10 || len(got) != 10 {
		t.Fatalf("file: info %d bytes, read %d", info.Size, len(got))
	}
	step("delete a file", files.Delete(ctx, "file-1"))

	batches, err := js.KeyValue(ctx, jobswire.Batches)
	step("bind the batches bucket", err)
	rev, err := batches.Create(ctx, "b.t.batch_1", []byte("v1"))
	step("create a record", err)
	_, err = batches.Update(ctx, "b.t.batch_1", []byte("v2"), rev)
	step("update a record", err)
	e, err := batches.Get(ctx, "b.t.batch_1")
	step("read a record", err)
	if string(e.Value()) != "v2" {
		t.Fatalf("record %q", e.Value())
	}
	kl, err := batches.ListKeysFiltered(ctx, "b.t.*")
	step("list records", err)
	n := 0
	for range kl.Keys() {
		n++
	}
	if n != 1 {
		t.Fatalf("listed %d records", n)
	}
	results, err := js.KeyValue(ctx, jobswire.Results)
	step("bind the results bucket", err)
	_, err = results.Create(ctx, "batch_1.x", []byte("r"))
	step("store a result", err)
	if _, err := results.Create(ctx, "batch_1.x", []byte("r")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("a second result for one line: %v", err)
	}
	w, err := results.WatchFiltered(ctx, []string{"batch_1.>"})
	step("watch results", err)
	if e := <-w.Updates(); e == nil || string(e.Value()) != "r" {
		t.Fatalf("watched %v", e)
	}
	w.Stop()
	rst, err := js.Stream(ctx, "KV_"+jobswire.Results)
	step("bind the results stream", err)
	si, err := rst.Info(ctx, jetstream.WithSubjectFilter("$KV."+jobswire.Results+".batch_1.>"))
	step("count results", err)
	if len(si.State.Subjects) != 1 {
		t.Fatalf("counted %d results", len(si.State.Subjects))
	}

	work, err := js.Stream(ctx, jobswire.Stream)
	step("bind the work stream", err)
	cons, err := js.CreateOrUpdateConsumer(ctx, jobswire.Stream, jetstream.ConsumerConfig{
		Durable: jobswire.ConsumerName("m"), FilterSubject: jobswire.ModelFilter("m"), AckPolicy: jetstream.AckExplicitPolicy,
		Metadata: map[string]string{jobswire.ConsumerModelKey: "m"},
	})
	step("create a model's consumer", err)
	for _, b := range []string{"batch_1", "batch_2"} {
		_, err = js.Publish(ctx, jobswire.LineSubject("m", b), []byte(b))
		step("publish a line", err)
	}
	step("purge a batch's lines", work.Purge(ctx, jetstream.WithPurgeSubject(jobswire.BatchFilter("batch_2"))))
	lister := work.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.NumPending != 1 || ci.Config.Metadata[jobswire.ConsumerModelKey] != "m" {
			t.Fatalf("consumer %s: pending %d", ci.Name, ci.NumPending)
		}
	}
	step("list consumers", lister.Err())
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	step("pull a line", err)
	if string(msg.Data()) != "batch_1" {
		t.Fatalf("pulled %q", msg.Data())
	}
	step("acknowledge a line", msg.DoubleAck(ctx))

	// Webhook events: published and pulled on the same stream.
	hooks, err := js.CreateOrUpdateConsumer(ctx, jobswire.Stream, jetstream.ConsumerConfig{
		Durable: jobswire.HooksConsumer, FilterSubject: jobswire.HooksSubjects, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1,
	})
	step("create the webhook consumer", err)
	_, err = js.Publish(ctx, jobswire.HookSubject("acme"), []byte("event"), jetstream.WithMsgID("msg_1"))
	step("publish a webhook event", err)
	ev, err := hooks.Next(jetstream.FetchMaxWait(5 * time.Second))
	step("pull a webhook event", err)
	if string(ev.Data()) != "event" {
		t.Fatalf("pulled %q", ev.Data())
	}
	step("acknowledge a webhook event", ev.DoubleAck(ctx))

	// What it may not do.
	for name, call := range map[string]func(context.Context) error{
		"delete the work stream": func(c context.Context) error { return js.DeleteStream(c, jobswire.Stream) },
		"delete a bucket":        func(c context.Context) error { return js.DeleteKeyValue(c, jobswire.Batches) },
		"delete the files":       func(c context.Context) error { return js.DeleteObjectStore(c, jobswire.Files) },
		"reconfigure the stream": func(c context.Context) error {
			_, err := js.UpdateStream(c, jobswire.StreamConfig(1))
			return err
		},
		"delete a model's consumer": func(c context.Context) error {
			return js.DeleteConsumer(c, jobswire.Stream, jobswire.ConsumerName("m"))
		},
		"create its own stream": func(c context.Context) error {
			_, err := js.CreateStream(c, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}})
			return err
		},
	} {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := call(c); err == nil {
			t.Errorf("edge could %s", name)
		}
		cancel()
	}
	if _, err := cjs.Stream(ctx, jobswire.Stream); err != nil {
		t.Fatalf("the work stream is gone: %v", err)
	}
}
