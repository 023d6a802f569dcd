package link

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// allowList is an Authorize that the test changes, as a table would.
type allowList struct {
	mu sync.Mutex
	ok map[string]bool
}

func (a *allowList) authorize(node string, _ *x509.Certificate) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ok[node] {
		return fmt.Errorf("node %s is not in the table or is revoked", node)
	}
	return nil
}

func (a *allowList) set(node string, ok bool) {
	a.mu.Lock()
	a.ok[node] = ok
	a.mu.Unlock()
}

func refused(t *testing.T, p *Peer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Do(ctx, chatReq(false, "hi"), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || !e.Retryable {
		t.Fatalf("err %v; want a retryable refusal", err)
	}
}

func TestLinksAcceptOnlyCurrentNodes(t *testing.T) {
	c := newTestCluster(t)
	t.Run("unknown node refused by the server", func(t *testing.T) {
		rec := newRecorder()
		allow := &allowList{ok: map[string]bool{"edge-b": true}}
		scfg := c.config(t, "edge-b")
		scfg.Authorize, scfg.HandshakeTimeout = allow.authorize, time.Second
		b := startTransport(t, scfg, rec.handle)
		acfg := c.config(t, "edge-a")
		acfg.HandshakeTimeout = time.Second
		a := startTransport(t, acfg, nil)
		refused(t, peerOf(t, a, b))
		if rec.count() != 0 {
			t.Fatal("a request from an unknown node ran")
		}
	})
	t.Run("unknown server refused by the client", func(t *testing.T) {
		rec := newRecorder()
		b := startTransport(t, c.config(t, "edge-b"), rec.handle)
		acfg := c.config(t, "edge-a")
		acfg.Authorize, acfg.HandshakeTimeout = (&allowList{ok: map[string]bool{}}).authorize, time.Second
		a := startTransport(t, acfg, nil)
		refused(t, peerOf(t, a, b))
		if rec.count() != 0 {
			t.Fatal("the request was sent to an unknown node")
		}
	})
	t.Run("control API certificate cannot be a peer", func(t *testing.T) {
		rec := newRecorder()
		b := startTransport(t, c.config(t, "edge-b"), rec.handle)
		acfg := c.config(t, "edge-a")
		cert, err := c.ca.IssueServer("edge-a", []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		acfg.Certificate, acfg.HandshakeTimeout = cert, time.Second
		a := startTransport(t, acfg, nil)
		refused(t, peerOf(t, a, b))
		if rec.count() != 0 {
			t.Fatal("a request from a control-API certificate ran")
		}
	})
	t.Run("revoked node refused and its link dropped", func(t *testing.T) {
		rec := newRecorder()
		allow := &allowList{ok: map[string]bool{"edge-a": true, "edge-b": true}}
		scfg := c.config(t, "edge-b")
		scfg.Authorize, scfg.HandshakeTimeout = allow.authorize, time.Second
		b := startTransport(t, scfg, rec.handle)
		acfg := c.config(t, "edge-a")
		acfg.HandshakeTimeout = time.Second
		a := startTransport(t, acfg, nil)
		p := peerOf(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := p.Do(ctx, chatReq(false, "hi"), "gpt")
		if err != nil {
			t.Fatalf("before revocation: %v", err)
		}
		if resp.Stream != nil {
			resp.Stream.Close()
		}
		if !p.st.up() {
			t.Fatal("the link is not up after a request")
		}
		allow.set("edge-a", false)
		if n := b.Revalidate(); n != 1 {
			t.Fatalf("Revalidate closed %d links, want 1", n)
		}
		wait.For(t, 5*time.Second, "the revoked link to drop", func() bool { return !p.st.up() })
		before := rec.count()
		refused(t, p)
		// A redial is refused too.
		p.Disconnect()
		refused(t, p)
		if rec.count() != before {
			t.Fatal("a request from a revoked node ran")
		}
	})
}
