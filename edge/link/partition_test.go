package link

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// TestPartitionDetectedAndHealed cuts a warm link silently (no close
// packet reaches either side, as when a peer's host dies): the stream in
// flight ends with an error, the peer is marked down within the idle
// timeout and requests fail over at once; once the path heals, a
// background redial brings the link back.
func TestPartitionDetectedAndHealed(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	rec.n, rec.delay = 100000, 5*time.Millisecond
	bcfg := c.config(t, "edge-b")
	b := startTransport(t, bcfg, rec.handle)
	r, err := relay.Start(relay.Config{Target: b.Addr().String(), UDPListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	acfg := c.config(t, "edge-a")
	acfg.KeepAlivePeriod, acfg.MaxIdleTimeout = 200*time.Millisecond, time.Second
	acfg.RedialMin, acfg.RedialMax = 50*time.Millisecond, 200*time.Millisecond
	a := startTransport(t, acfg, nil)
	p, err := a.Peer("edge-b", r.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	resp, err := p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	r.Partition(true)
	cut := time.Now()
	var serr error
	for serr == nil {
		_, serr = resp.Stream.Next()
	}
	var e *llm.Error
	if errors.Is(serr, io.EOF) || !errors.As(serr, &e) {
		t.Fatalf("stream through a partition ended with %v", serr)
	}
	wait.For(t, 10*time.Second, "the peer marked down", func() bool { return !a.Healthy("edge-b") })
	t.Logf("partition detected after %v (idle timeout %v)", time.Since(cut), acfg.MaxIdleTimeout)
	if _, err := p.Do(context.Background(), chatReq(false, "hi"), "gpt"); !errors.Is(err, ErrPeerDown) {
		t.Fatalf("request during the partition: %v", err)
	}
	r.Partition(false)
	wait.For(t, 10*time.Second, "the link restored", func() bool { return a.Healthy("edge-b") })
	if _, err := p.Do(context.Background(), chatReq(false, "hi"), "gpt"); err != nil {
		t.Fatalf("request after healing: %v", err)
	}
}
