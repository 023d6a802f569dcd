package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type testCluster struct {
	ca *pki.CA
}

func newTestCluster(t testing.TB) *testCluster {
	t.Helper()
	ca, err := pki.NewCA("test-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{ca: ca}
}

func (c *testCluster) config(t testing.TB, node string) Config {
	t.Helper()
	cert, err := c.ca.Issue(node, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Certificate, cfg.CAs = node, cert, c.ca.Pool()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Registerer = prometheus.NewRegistry()
	return cfg
}

func startTransport(t testing.TB, cfg Config, h Handler) *Transport {
	t.Helper()
	tr, err := Listen(cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if h != nil {
		if err := tr.Serve(h); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func peerOf(t testing.TB, from, to *Transport) *Peer {
	t.Helper()
	p, err := from.Peer(to.NodeID(), to.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// fakeStream yields n OpenAI-format chunks, waiting delay between them,
// and records when its context was cancelled.
type fakeStream struct {
	ctx     context.Context
	n, i    int
	delay   time.Duration
	typed   bool
	chunk   llm.Chunk
	closed  atomic.Bool
	endWith error
}

func (s *fakeStream) Next() (*llm.Chunk, error) {
	if s.i >= s.n {
		if s.endWith != nil {
			return nil, s.endWith
		}
		return nil, io.EOF
	}
	if s.i > 0 && s.delay > 0 {
		select {
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		case <-time.After(s.delay):
		}
	}
	s.i++
	if s.typed {
		s.chunk.Reset()
		s.chunk.ID, s.chunk.Model, s.chunk.Created = "c1", "m", 1
		s.chunk.Choices = append(s.chunk.Choices, llm.ChunkChoice{Content: fmt.Sprintf("tok%d ", s.i), HasContent: true})
		return &s.chunk, nil
	}
	s.chunk.SetRaw([]byte(fmt.Sprintf(`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok%d "}}]}`, s.i)))
	return &s.chunk, nil
}
func (s *fakeStream) Usage() (llm.Usage, bool) {
	return llm.Usage{PromptTokens: 3, CompletionTokens: s.i, TotalTokens: 3 + s.i}, s.i == s.n
}
func (s *fakeStream) Close() error { s.closed.Store(true); return nil }

// recorder is a Handler that answers from fakeStreams and records calls
// and cancellations.
type recorder struct {
	mu       sync.Mutex
	calls    []*llm.Request
	calledAt chan struct{}
	canceled chan time.Time
	n        int
	delay    time.Duration
	block    bool // wait for cancellation before answering
	typed    bool
	endWith  error
}

func newRecorder() *recorder {
	return &recorder{calledAt: make(chan struct{}, 100), canceled: make(chan time.Time, 100), n: 5}
}

func (r *recorder) handle(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	r.mu.Lock()
	r.calls = append(r.calls, req)
	r.mu.Unlock()
	r.calledAt <- struct{}{}
	context.AfterFunc(ctx, func() { r.canceled <- time.Now() })
	if r.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if strings.Contains(string(req.Body), "fail-429") {
		return nil, &llm.Error{Status: 429, Type: llm.TypeRateLimit, Message: "slow down", RetryAfter: 2 * time.Second, Retryable: true, Cause: errors.New("secret host")}
	}
	if !req.Stream {
		return &llm.Response{Body: []byte(`{"id":"x","object":"chat.completion","model":"` + req.Model + `"}`), Usage: llm.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}}, nil
	}
	return &llm.Response{Stream: &fakeStream{ctx: ctx, n: r.n, delay: r.delay, typed: r.typed, endWith: r.endWith}}, nil
}

func (r *recorder) snapshot() []*llm.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*llm.Request(nil), r.calls...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func chatReq(stream bool, text string) *llm.Request {
	return &llm.Request{ID: "req_1", Op: llm.OpChat, Model: "gpt", Stream: stream,
		Body: []byte(`{"model":"gpt","messages":[{"role":"user","content":"` + text + `"}]}`)}
}

func drain(t *testing.T, st llm.Stream) ([]string, error) {
	t.Helper()
	var out []string
	for {
		c, err := st.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(c.AppendJSON(nil)))
	}
}

func TestForwardPlainAndStream(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	ctx := context.Background()

	resp, err := p.Do(ctx, chatReq(false, "hi"), "upstream-model")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Body); got != `{"id":"x","object":"chat.completion","model":"upstream-model"}` {
		t.Errorf("body %s", got)
	}
	if resp.Usage.TotalTokens != 3 {
		t.Errorf("usage %+v", resp.Usage)
	}
	if got := rec.snapshot()[0]; got.Model != "upstream-model" || got.ID != "req_1" || got.Op != llm.OpChat || Hops(ctx) != 0 {
		t.Errorf("served request %+v", got)
	}

	resp, err = p.Do(ctx, chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := drain(t, resp.Stream)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v", err)
	}
	if len(chunks) != 5 || !strings.Contains(chunks[4], `"content":"tok5 "`) {
		t.Errorf("chunks %q", chunks)
	}
	if u, ok := resp.Stream.Usage(); !ok || u.CompletionTokens != 5 {
		t.Errorf("usage %+v %v", u, ok)
	}
	resp.Stream.Close()
	if !a.Healthy("edge-b") {
		t.Error("link not healthy after use")
	}

	// An error before the first byte keeps its client-safe parts and
	// loses its cause.
	_, err = p.Do(ctx, chatReq(true, "fail-429"), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != 429 || !e.Retryable || e.RetryAfter != 2*time.Second || e.Message != "slow down" || strings.Contains(e.Error(), "secret") {
		t.Errorf("error %v", err)
	}
}

func TestTypedChunksStayTyped(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	rec.typed = true
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	resp, err := p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	ch, err := resp.Stream.Next()
	if err != nil {
		t.Fatal(err)
	}
	var local llm.Chunk
	local.ID, local.Model, local.Created = "c1", "m", 1
	local.Choices = []llm.ChunkChoice{{Content: "tok1 ", HasContent: true}}
	if ch.Raw != nil || len(ch.Choices) != 1 || ch.Choices[0].Content != "tok1 " {
		t.Fatalf("chunk raw=%q choices=%+v", ch.Raw, ch.Choices)
	}
	if got, want := string(ch.AppendJSON(nil)), string(local.AppendJSON(nil)); got != want {
		t.Errorf("re-encoded chunk\n got %s\nwant %s", got, want)
	}
}

func TestAnthropicSurfaceRequestTravels(t *testing.T) {
	topK := 7
	maxTok := 10
	req := &llm.Request{ID: "r", Op: llm.OpChat, Model: "claude", Stream: true, IncludeUsage: true,
		Chat: &llm.ChatRequest{Model: "claude", Messages: []llm.Message{{Role: "user", Content: llm.TextContent("hello")}}, MaxTokens: &maxTok, TopK: &topK}}
	h, err := encodeHeader(make([]byte, 16), req, "claude-up", 1, time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	c, err := got.ChatRequest()
	if err != nil {
		t.Fatal(err)
	}
	if got.Model != "claude-up" || !got.Stream || !got.IncludeUsage || c.TopK == nil || *c.TopK != 7 || *c.MaxTokens != 10 {
		t.Errorf("decoded %+v chat %+v", got, c)
	}
	if txt, _ := c.Messages[0].Text(); txt != "hello" {
		t.Errorf("message %q", txt)
	}
}

// TestCancelStopsRemote: a client that goes away mid-stream resets the
// link stream, and the serving side's context ends.
func TestCancelStopsRemote(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	rec.n, rec.delay = 1000, 5*time.Millisecond
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)

	best := time.Hour
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := p.Do(ctx, chatReq(true, "hi"), "gpt")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Stream.Next(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cancel()
		select {
		case at := <-rec.canceled:
			best = min(best, at.Sub(start))
		case <-time.After(10 * time.Second):
			t.Fatal("the serving side's context was not cancelled")
		}
		// Chunks that arrived before the cancel may still be read; then
		// the stream ends in an error, never a clean end.
		err = nil
		for n := 0; err == nil && n < rec.n; n++ {
			_, err = resp.Stream.Next()
		}
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("Next after cancel: %v", err)
		}
		resp.Stream.Close()
	}
	t.Logf("remote cancelled %v after the client (best of 3)", best)
	if best > 2*time.Second {
		t.Errorf("remote cancellation took %v", best)
	}

	// Closing the stream early (the surface's path) cancels too.
	resp, err := p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	resp.Stream.Next()
	resp.Stream.Close()
	select {
	case <-rec.canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the stream did not cancel the serving side")
	}
}

func TestPeerKilledMidStream(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	rec.n, rec.delay = 1000, 5*time.Millisecond
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	resp, err := p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	_, err = drain(t, resp.Stream)
	var e *llm.Error
	if errors.Is(err, io.EOF) || !errors.As(err, &e) || e.Code != "peer_link_lost" {
		t.Fatalf("stream ended with %v; want a peer_link_lost error", err)
	}
	wait.For(t, 5*time.Second, "link marked down", func() bool { return !a.Healthy("edge-b") })
	// While the link is down a request fails over at once.
	start := time.Now()
	_, err = p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	if !errors.As(err, &e) || !e.Retryable || !errors.Is(err, ErrPeerDown) {
		t.Fatalf("request to a down peer: %v", err)
	}
	t.Logf("request to a down peer failed in %v", time.Since(start))
}

func TestPeerKilledBeforeFirstByte(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	rec.block = true
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	go func() {
		<-rec.calledAt
		b.Close()
	}()
	_, err := p.Do(context.Background(), chatReq(true, "hi"), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || !e.Retryable || e.Status != http.StatusBadGateway {
		t.Fatalf("err %v; want a retryable 502", err)
	}
}

func TestUnreachablePeerFailsFastAfterFirstDial(t *testing.T) {
	c := newTestCluster(t)
	cfg := c.config(t, "edge-a")
	cfg.HandshakeTimeout = 300 * time.Millisecond
	a := startTransport(t, cfg, nil)
	// A socket that never answers.
	silent := startTransport(t, c.config(t, "edge-b"), nil)
	p, err := a.Peer("edge-b", silent.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Do(context.Background(), chatReq(false, "hi"), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || !e.Retryable {
		t.Fatalf("err %v", err)
	}
	start := time.Now()
	_, err = p.Do(context.Background(), chatReq(false, "hi"), "gpt")
	if !errors.Is(err, ErrPeerDown) {
		t.Fatalf("second request: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a request to a down peer took %v", d)
	}
}

func TestHopLimit(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	_, err := p.Do(WithHops(context.Background(), 2), chatReq(false, "hi"), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusLoopDetected || !errors.Is(err, ErrHopLimit) {
		t.Fatalf("err %v", err)
	}
	if rec.count() != 0 {
		t.Fatal("a request over the hop limit was forwarded")
	}
	// One hop below the limit goes through, and the server sees the count.
	var seen atomic.Int64
	b2 := startTransport(t, c.config(t, "edge-c"), func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		seen.Store(int64(Hops(ctx)))
		return &llm.Response{Body: []byte(`{}`)}, nil
	})
	p2 := peerOf(t, a, b2)
	if _, err := p2.Do(WithHops(context.Background(), 1), chatReq(false, "hi"), "gpt"); err != nil {
		t.Fatal(err)
	}
	if seen.Load() != 2 {
		t.Errorf("hops at the serving side %d, want 2", seen.Load())
	}
}

// TestReplayRunsOnce sends one header twice, on the warm link and then on
// a new link that resumes with 0-RTT, as a network replaying 0-RTT data
// would: the handler runs once.
func TestReplayRunsOnce(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	acfg := c.config(t, "edge-a")
	a := startTransport(t, acfg, nil)
	p := peerOf(t, a, b)
	ctx := context.Background()
	// A first request gets a session ticket into the cache.
	if _, err := p.Do(ctx, chatReq(false, "warm"), "gpt"); err != nil {
		t.Fatal(err)
	}
	h, err := encodeHeader([]byte("0123456789abcdef"), chatReq(false, "once"), "gpt", 1, time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	send := func() *llm.Error {
		t.Helper()
		conn, err := p.st.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		awaitHandshakeUnderRace(ctx, conn)
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fw := newFrameWriter(str, 1<<20)
		if err := fw.write(frameOf(h)); err != nil {
			t.Fatal(err)
		}
		fw.flush()
		str.Close()
		s := &linkStream{p: p, str: str, fr: newFrameReader(str, 1<<20), stop: func() bool { return true }}
		if err := s.fr.read(&s.f); err != nil {
			t.Fatal(err)
		}
		defer s.finish(io.EOF, "ok")
		if st := s.f.GetStatus(); st.GetError() != nil {
			return decodeError(st.Error, "edge-b")
		}
		return nil
	}
	if e := send(); e != nil {
		t.Fatalf("first send: %v", e)
	}
	if e := send(); e == nil || e.Code != "link_duplicate" {
		t.Fatalf("replay on the warm link: %v", e)
	}
	p.Disconnect()
	if e := send(); e == nil || e.Code != "link_duplicate" {
		t.Fatalf("replay on a resumed link: %v", e)
	}
	wait.For(t, 5*time.Second, "a 0-RTT handshake", func() bool {
		return counterValue(a.met.handshakes.WithLabelValues("0rtt")) >= 1
	})
	n := 0
	for _, r := range rec.snapshot() {
		if strings.Contains(string(r.Body), "once") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the request ran %d times", n)
	}

	// A stale header (older than the window) is refused too.
	old, _ := encodeHeader([]byte("fedcba9876543210"), chatReq(false, "stale"), "gpt", 1, time.Now().Add(-time.Hour), time.Time{})
	h = old
	if e := send(); e == nil || e.Code != "link_clock_skew" {
		t.Fatalf("stale header: %v", e)
	}
}

func TestZeroRTTOnReconnect(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	for i := 0; i < 3; i++ {
		if _, err := p.Do(context.Background(), chatReq(false, "hi"), "gpt"); err != nil {
			t.Fatal(err)
		}
		conn, err := p.st.get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-conn.HandshakeComplete():
		case <-time.After(10 * time.Second):
			t.Fatalf("link %d: no handshake", i)
		}
		if used := conn.ConnectionState().Used0RTT; used != (i > 0) {
			t.Fatalf("link %d: Used0RTT %v; want 0-RTT on every link after the first", i, used)
		}
		p.Disconnect()
	}
	wait.For(t, 10*time.Second, "handshake counts", func() error {
		full, zero := counterValue(a.met.handshakes.WithLabelValues("full")), counterValue(a.met.handshakes.WithLabelValues("0rtt"))
		if full != 1 || zero != 2 {
			return fmt.Errorf("%v full and %v 0-RTT handshakes", full, zero)
		}
		return nil
	})
	if n := rec.count(); n != 3 {
		t.Fatalf("the peer ran %d requests, want 3", n)
	}
}

func TestCertificatesRefused(t *testing.T) {
	c := newTestCluster(t)
	other := newTestCluster(t)
	foreign := func(t testing.TB, node string) Config {
		cfg := other.config(t, node)
		cfg.CAs = c.ca.Pool() // trusts our CA, but holds a certificate from another
		return cfg
	}
	expired := func(t testing.TB, node string) Config {
		cfg := c.config(t, node)
		cert, err := c.ca.IssueValidity(node, nil, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificate = cert
		return cfg
	}
	cases := []struct {
		name       string
		server     func(testing.TB, string) Config
		client     func(testing.TB, string) Config
		serverName string // the node the server's certificate names
	}{
		{"client from another CA", c.config, foreign, "edge-b"},
		{"server from another CA", foreign, c.config, "edge-b"},
		{"expired client", c.config, expired, "edge-b"},
		{"expired server", expired, c.config, "edge-b"},
		{"wrong node name", c.config, c.config, "edge-c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			scfg := tc.server(t, tc.serverName)
			scfg.HandshakeTimeout = time.Second
			b := startTransport(t, scfg, rec.handle)
			acfg := tc.client(t, "edge-a")
			acfg.HandshakeTimeout = time.Second
			a := startTransport(t, acfg, nil)
			p, err := a.Peer("edge-b", b.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = p.Do(ctx, chatReq(false, "hi"), "gpt")
			var e *llm.Error
			if !errors.As(err, &e) || !e.Retryable {
				t.Fatalf("err %v; want a retryable refusal", err)
			}
			if rec.count() != 0 {
				t.Fatal("the request ran")
			}
		})
	}

	t.Run("no client certificate", func(t *testing.T) {
		rec := newRecorder()
		b := startTransport(t, c.config(t, "edge-b"), rec.handle)
		acfg := c.config(t, "edge-a")
		a := startTransport(t, acfg, nil)
		a.cliTLS = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: c.ca.Pool(), NextProtos: []string{ALPN}}
		p := peerOf(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := p.Do(ctx, chatReq(false, "hi"), "gpt")
		var e *llm.Error
		if !errors.As(err, &e) || !e.Retryable {
			t.Fatalf("err %v; want a retryable refusal", err)
		}
		if rec.count() != 0 {
			t.Fatal("the request ran")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	c := newTestCluster(t)
	good := c.config(t, "edge-a")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Config){
		"no node":      func(c *Config) { c.NodeID = "" },
		"no cert":      func(c *Config) { c.Certificate = tls.Certificate{} },
		"no CA":        func(c *Config) { c.CAs = nil },
		"idle <= ka":   func(c *Config) { c.MaxIdleTimeout = c.KeepAlivePeriod },
		"zero hops":    func(c *Config) { c.MaxHops = 0 },
		"small frames": func(c *Config) { c.MaxFrameBytes = 10 },
	} {
		cfg := good
		edit(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReplayWindowForgetsAfterTwoWindows(t *testing.T) {
	w := newReplayWindow(time.Second)
	t0 := time.Unix(1000, 0)
	if !w.firstSeen([]byte("a"), t0) || w.firstSeen([]byte("a"), t0.Add(500*time.Millisecond)) {
		t.Fatal("duplicate within the window not caught")
	}
	if w.firstSeen([]byte("a"), t0.Add(1500*time.Millisecond)) {
		t.Fatal("forgotten after one window")
	}
	if !w.firstSeen([]byte("a"), t0.Add(5*time.Second)) {
		t.Fatal("remembered after many windows")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestOversizeRequestRefusedLocally(t *testing.T) {
	c := newTestCluster(t)
	rec := newRecorder()
	b := startTransport(t, c.config(t, "edge-b"), rec.handle)
	acfg := c.config(t, "edge-a")
	acfg.MaxFrameBytes = 4096
	a := startTransport(t, acfg, nil)
	p := peerOf(t, a, b)
	_, err := p.Do(context.Background(), chatReq(false, strings.Repeat("x", 8192)), "gpt")
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge || e.Retryable {
		t.Fatalf("err %v", err)
	}
	if rec.count() != 0 {
		t.Fatal("an oversize request ran")
	}
}

// bigStream yields n chunks of size bytes each and counts them.
type bigStream struct {
	ctx      context.Context
	n, size  int
	produced atomic.Int64
	chunk    llm.Chunk
}

func (s *bigStream) Next() (*llm.Chunk, error) {
	if int(s.produced.Load()) >= s.n {
		return nil, io.EOF
	}
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	s.produced.Add(1)
	s.chunk.SetRaw([]byte(`{"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", s.size) + `"}}]}`))
	return &s.chunk, nil
}
func (s *bigStream) Usage() (llm.Usage, bool) { return llm.Usage{}, false }
func (s *bigStream) Close() error             { return nil }

// TestFlowControlIsBackpressure: a forwarding side that stops reading
// stops the serving side's producer once QUIC's flow-control windows
// and the socket buffers are full, instead of letting it buffer the
// whole answer.
func TestFlowControlIsBackpressure(t *testing.T) {
	c := newTestCluster(t)
	const size, n = 16 << 10, 10000 // 160 MB if nothing pushed back
	streams := make(chan *bigStream, 1)
	b := startTransport(t, c.config(t, "edge-b"), func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		s := &bigStream{ctx: ctx, n: n, size: size}
		streams <- s
		return &llm.Response{Stream: s}, nil
	})
	a := startTransport(t, c.config(t, "edge-a"), nil)
	p := peerOf(t, a, b)
	resp, err := p.Do(context.Background(), chatReq(true, "big"), "gpt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	s := <-streams
	// Wait until the producer has stalled: no progress for 300ms.
	last, since := s.produced.Load(), time.Now()
	wait.For(t, 20*time.Second, "the producer to stall", func() bool {
		if cur := s.produced.Load(); cur != last {
			last, since = cur, time.Now()
			return false
		}
		return time.Since(since) > 300*time.Millisecond
	})
	buffered := last * size
	t.Logf("the producer stalled after %d chunks (%d KiB) with the reader stopped", last, buffered>>10)
	if last >= n || buffered > 64<<20 {
		t.Fatalf("the producer ran on to %d chunks (%d MiB): no backpressure", last, buffered>>20)
	}
	// Reading again lets it continue.
	for i := 0; i < 200; i++ {
		if _, err := resp.Stream.Next(); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "the producer to resume", func() bool { return s.produced.Load() > last })
}

// TestManyConcurrentStreams holds more streams open at once than
// quic-go's default limit of 100 on one link.
func TestManyConcurrentStreams(t *testing.T) {
	c := newTestCluster(t)
	const n = 150
	var arrived atomic.Int64
	release := make(chan struct{})
	// Opening 150 streams under -race on a busy machine can starve the
	// pings past the default's 800ms; liveness is liveness_test.go's.
	tolerant := func(node string) Config {
		cfg := c.config(t, node)
		cfg.PingMisses = 50 // 10s of silence
		cfg.MaxIdleTimeout = 15 * time.Second
		return cfg
	}
	b := startTransport(t, tolerant("edge-b"), func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		arrived.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &llm.Response{Body: []byte(`{}`)}, nil
	})
	a := startTransport(t, tolerant("edge-a"), nil)
	p := peerOf(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := p.Do(ctx, chatReq(false, "hi"), "gpt")
			errs <- err
		}()
	}
	wait.For(t, 20*time.Second, fmt.Sprintf("%d requests open at once", n), func() bool { return arrived.Load() == n })
	close(release)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestPeerRestartRejects0RTT: a restarted peer has new session ticket
// keys, so it rejects 0-RTT and drops the data sent in it. The request is
// sent again on the completed handshake and runs exactly once, whether
// the new link was dialled by a request or by the background redial.
func TestPeerRestartRejects0RTT(t *testing.T) {
	c := newTestCluster(t)
	bcfg := c.config(t, "edge-b")
	rec1 := newRecorder()
	b1 := startTransport(t, bcfg, rec1.handle)
	addr := b1.Addr().String()
	acfg := c.config(t, "edge-a")
	acfg.RedialMin, acfg.RedialMax = 20*time.Millisecond, 100*time.Millisecond
	acfg.HandshakeTimeout = time.Second // a redial that started while the peer was down gives up soon
	a := startTransport(t, acfg, nil)
	p := peerOf(t, a, b1)
	ctx := context.Background()
	if _, err := p.Do(ctx, chatReq(false, "first"), "gpt"); err != nil {
		t.Fatal(err)
	}
	restart := func(rec *recorder) *Transport {
		t.Helper()
		bcfg.Registerer = prometheus.NewRegistry()
		var b *Transport
		var err error
		// The old socket's port can take a moment to be free again.
		wait.For(t, 5*time.Second, "the port to rebind", func() bool {
			b, err = Listen(bcfg, addr)
			return err == nil
		})
		t.Cleanup(func() { b.Close() })
		if err := b.Serve(rec.handle); err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The next request dials: its 0-RTT attempt is rejected.
	p.Disconnect()
	b1.Close()
	rec2 := newRecorder()
	b2 := restart(rec2)
	if _, err := p.Do(ctx, chatReq(false, "after restart"), "gpt"); err != nil {
		t.Fatalf("request to the restarted peer: %v", err)
	}
	if n := rec2.count(); n != 1 {
		t.Fatalf("the request ran %d times on the restarted peer", n)
	}

	// The link dies with the peer; the background redial's 0-RTT attempt
	// is rejected, and the link it installs must still be usable.
	t0 := time.Now()
	b2.Close()
	// A closing peer tells its links; the link is down long before the
	// idle timeout.
	wait.For(t, acfg.MaxIdleTimeout/2, "the link marked down", func() bool { return !a.Healthy("edge-b") })
	rec3 := newRecorder()
	restart(rec3)
	wait.For(t, 10*time.Second, "the link restored", func() bool { return a.Healthy("edge-b") })
	t.Logf("link down %v after the peer closed, and restored by the redial", time.Since(t0))
	if _, err := p.Do(ctx, chatReq(false, "after redial"), "gpt"); err != nil {
		t.Fatalf("request on the redialled link: %v", err)
	}
	if n := rec3.count(); n != 1 {
		t.Fatalf("the request ran %d times", n)
	}
}
