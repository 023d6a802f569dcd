// Command links measures what forwarding a request to another edge costs
// over each transport, under emulated WAN delay: the time to first token
// of a streamed chat request forwarded from edge A to edge B, which
// serves it from a mock provider.
//
//	go run ./scripts/bench/links [-samples 21] [-delays 0,10,40] [-readme README.md] [-v]
//
// Transports, each through a userspace relay (shared/testkit/relay) that
// adds the one-way delay in each direction:
//
//	(a) warm QUIC link (edge/link), the connection already up;
//	(b) new QUIC link resuming its TLS session with 0-RTT;
//	(c) HTTP/1.1 over a new TCP + TLS 1.3 connection per request;
//	(d) HTTP/2 over a warm TCP + TLS 1.3 connection.
//
// The baseline, measured in the same run, is B serving the same request
// itself with no forwarding and no relay: "added" is what forwarding
// costs. Every sample of every column follows the same idle gap of one
// emulated round trip. Every cell is the median of its samples. The last line of the
// output is a machine-readable summary at the largest delay.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/edge/api"
	openaiapi "github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/link"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/relay"
)

// Config is the benchmark's settings.
type Config struct {
	// Samples is the number of requests per cell; cells report medians.
	Samples int
	// Delays are the one-way delays to emulate, in milliseconds.
	Delays []int
	// Readme, when set, is a markdown file whose bench:links section is
	// replaced with the results.
	Readme string
	// Verbose prints every sample to stderr.
	Verbose bool
}

func main() {
	cfg := Config{}
	var delays string
	flag.IntVar(&cfg.Samples, "samples", 21, "requests per cell (medians are reported)")
	flag.StringVar(&delays, "delays", "0,10,40", "one-way delays to emulate, in ms, comma separated")
	flag.BoolVar(&cfg.Verbose, "v", false, "print every sample to stderr")
	flag.StringVar(&cfg.Readme, "readme", "", "replace the bench:links section of this markdown file with the results")
	flag.Parse()
	for _, f := range strings.Split(delays, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || d < 0 {
			log.Fatalf("links: bad -delays %q", delays)
		}
		cfg.Delays = append(cfg.Delays, d)
	}
	if err := run(context.Background(), cfg); err != nil {
		log.Fatal(err)
	}
}

// The transports, in table order.
const (
	direct = iota
	warmQUIC
	zeroRTT
	tcpNew
	h2Warm
	numPaths
)

var pathNames = [numPaths]string{"direct (B itself)", "(a) warm QUIC link", "(b) new QUIC link, 0-RTT", "(c) HTTP/1.1, new TCP+TLS 1.3", "(d) HTTP/2, warm TCP+TLS"}

// idleWindow is how long an idle link's traffic is counted.
const idleWindow = 5 * time.Second

// teardown is the pause between closing a link and timing a new one.
const teardown = 5 * time.Millisecond

const body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in a few words."}]}`

// bench holds edge B, the relays and the clients that play edge A.
type bench struct {
	gw      *gateway.Gateway
	udp     *relay.Relay // to B's link
	tcp     *relay.Relay // to B's HTTPS API
	ping    *relay.Relay // to a UDP echo server, for the path's own RTT
	pingC   net.Conn
	peer    *link.Peer
	reg     *prometheus.Registry // A's link metrics
	h1, h2  *http.Client
	httpURL string
}

func run(ctx context.Context, cfg Config) error {
	if cfg.Samples < 1 || len(cfg.Delays) == 0 {
		return errors.New("links: need at least one sample and one delay")
	}
	b, cleanup, err := setup()
	if err != nil {
		return err
	}
	defer cleanup()
	started := time.Now()
	res := results{samples: cfg.Samples}
	tcpBefore := b.tcp.Accepted.Load()
	for _, d := range cfg.Delays {
		delay := time.Duration(d) * time.Millisecond
		b.udp.Set(delay, 0, 0)
		b.tcp.Set(delay, 0, 0)
		b.ping.Set(delay, 0, 0)
		// Warm what is meant to be warm, at this delay.
		for i := 0; i < 3; i++ {
			if _, err := b.viaLink(ctx); err != nil {
				return fmt.Errorf("warm-up (link): %w", err)
			}
			if _, err := b.viaHTTP(ctx, b.h2); err != nil {
				return fmt.Errorf("warm-up (HTTP/2): %w", err)
			}
		}
		row := row{delayMS: d}
		var pings []time.Duration
		for i := 0; i < cfg.Samples; i++ {
			time.Sleep(2 * delay)
			t, err := b.pingRTT()
			if err != nil {
				return fmt.Errorf("ping at %d ms: %w", d, err)
			}
			pings = append(pings, t)
		}
		row.ping = median(pings)
		for p := direct; p < numPaths; p++ {
			var ttfts []time.Duration
			for i := 0; i < cfg.Samples; i++ {
				// Every sample, the baseline's included, follows the same
				// idle gap of one emulated round trip: a forwarded request
				// reaches B after B has been idle that long, and waking an
				// idle machine costs a few hundred microseconds that the
				// baseline must pay too.
				if p == zeroRTT {
					// Close the warm link first and let both ends finish
					// tearing it down, as when a link died a while ago.
					b.peer.Disconnect()
					time.Sleep(teardown)
				}
				time.Sleep(2 * delay)
				t, err := b.sample(ctx, p)
				if err != nil {
					return fmt.Errorf("%s at %d ms: %w", pathNames[p], d, err)
				}
				ttfts = append(ttfts, t)
			}
			row.ttft[p] = median(ttfts)
			if cfg.Verbose {
				fmt.Fprintln(os.Stderr, d, pathNames[p], ttfts)
			}
		}
		res.rows = append(res.rows, row)
	}
	// What a warm link costs while idle: pings (and their echoes and
	// ACKs) through the relay, both directions, over idleWindow.
	if _, err := b.viaLink(ctx); err != nil {
		return fmt.Errorf("idle warm-up: %w", err)
	}
	time.Sleep(time.Second) // let the request's own packets settle
	n0, b0, t0 := b.udp.Forwarded.Load(), b.udp.UDPBytes.Load(), time.Now()
	time.Sleep(idleWindow)
	secs := time.Since(t0).Seconds()
	res.idleBytes = float64(b.udp.UDPBytes.Load()-b0) / secs
	res.idlePackets = float64(b.udp.Forwarded.Load()-n0) / secs
	res.took = time.Since(started)
	// Check that each column measured what it says: (b) resumed with
	// 0-RTT every time, (c) opened a connection per request.
	hs := b.handshakes()
	n := int64(cfg.Samples * len(cfg.Delays))
	res.checks = append(res.checks,
		verdict(fmt.Sprintf("(b) new links resumed with 0-RTT: %d of %d (full handshakes %d, resumed without 0-RTT %d)", hs["0rtt"], n, hs["full"], hs["resumed"]), hs["0rtt"] == n),
		verdict(fmt.Sprintf("(c) TCP connections opened: %d for %d requests (HTTP/2 reused its one)", b.tcp.Accepted.Load()-tcpBefore, n), b.tcp.Accepted.Load()-tcpBefore == n))
	r := res.report()
	fmt.Print(r.text)
	if cfg.Readme != "" {
		if err := readme.Replace(cfg.Readme, readmeSection, r.markdown); err != nil {
			return fmt.Errorf("links: %w", err)
		}
		fmt.Printf("wrote the bench:links section of %s\n", cfg.Readme)
	}
	fmt.Println(r.summary)
	return nil
}

func (b *bench) sample(ctx context.Context, p int) (time.Duration, error) {
	switch p {
	case direct:
		return b.direct(ctx)
	case warmQUIC:
		return b.viaLink(ctx)
	case zeroRTT: // disconnected by the caller
		return b.viaLink(ctx)
	case tcpNew:
		return b.viaHTTP(ctx, b.h1)
	case h2Warm:
		return b.viaHTTP(ctx, b.h2)
	}
	return 0, errors.New("unknown path")
}

// pingRTT is one datagram's round trip through a relay like the others,
// to an echo server: the emulated path's real RTT, relay overhead and
// wake-ups included, which the targets are held against.
func (b *bench) pingRTT() (time.Duration, error) {
	var buf [16]byte
	start := time.Now()
	if _, err := b.pingC.Write([]byte("ping")); err != nil {
		return 0, err
	}
	b.pingC.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.pingC.Read(buf[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// handshakes counts A's link handshakes by kind.
func (b *bench) handshakes() map[string]int64 {
	out := map[string]int64{}
	mfs, _ := b.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "meridian_link_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" {
					out[l.GetValue()] = int64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

func request() *llm.Request {
	return &llm.Request{ID: "bench", Op: llm.OpChat, Model: "gpt-4o-mini", Stream: true, Body: []byte(body)}
}

// direct is B serving the request itself: its gateway, the mock
// provider, until the first chunk.
func (b *bench) direct(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	res, err := b.gw.Do(ctx, request())
	if err != nil {
		return 0, err
	}
	st := res.Response.Stream
	defer st.Close()
	if _, err := st.Next(); err != nil {
		return 0, err
	}
	d := time.Since(start)
	return d, drainStream(st)
}

func (b *bench) viaLink(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	resp, err := b.peer.Do(ctx, request(), "gpt-4o-mini")
	if err != nil {
		return 0, err
	}
	st := resp.Stream
	defer st.Close()
	if _, err := st.Next(); err != nil {
		return 0, err
	}
	d := time.Since(start)
	return d, drainStream(st)
}

func drainStream(st llm.Stream) error {
	for {
		if _, err := st.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// viaHTTP forwards the request to B's own OpenAI API, as an edge without
// links would, and times the first SSE data event.
func (b *bench) viaHTTP(ctx context.Context, c *http.Client) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.httpURL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, msg)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return 0, fmt.Errorf("no data event: %w", err)
		}
		if bytes.HasPrefix(line, []byte("data: ")) {
			break
		}
	}
	d := time.Since(start)
	_, err = io.Copy(io.Discard, br)
	return d, err
}

// setup starts the mock provider, edge B (gateway, HTTPS API and link)
// and the relays in front of B, and builds A's clients.
func setup() (*bench, func(), error) {
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*bench, func(), error) {
		cleanup()
		return nil, nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	mock, err := providermock.New(providermock.DefaultConfig())
	if err != nil {
		return fail(err)
	}
	mockURL, err := mock.Start("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { mock.Close() })

	gw := gateway.New(gateway.Config{Logger: quiet})
	tab := &table.Table{
		Providers: []table.Provider{{ID: "mock", Kind: table.KindOpenAI, BaseURL: mockURL + "/v1"}},
		Models:    []table.Model{{ID: "gpt-4o-mini"}},
		Routes:    []*table.Route{{Model: "gpt-4o-mini", Targets: []table.Target{{Provider: "mock"}}}},
	}
	if err := gw.SetTable(tab); err != nil {
		return fail(err)
	}
	closers = append(closers, gw.Close)

	ca, err := pki.NewCA("bench-ca", time.Hour)
	if err != nil {
		return fail(err)
	}
	certB, err := ca.Issue("edge-b", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		return fail(err)
	}
	certA, err := ca.Issue("edge-a", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		return fail(err)
	}

	// B's OpenAI API over HTTPS (HTTP/1.1 and HTTP/2).
	mux := http.NewServeMux()
	openaiapi.New(api.Config{Gateway: gw, Metrics: metrics.New(), Logger: quiet, MaxBodyBytes: 1 << 20, BodyReadTimeout: 10 * time.Second, NoAuth: true}).Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{certB}}, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.ServeTLS(ln, "", "")
	closers = append(closers, func() { srv.Close() })

	// B's link.
	lcB := link.DefaultConfig()
	lcB.NodeID, lcB.Certificate, lcB.CAs, lcB.Logger = "edge-b", certB, ca.Pool(), quiet
	trB, err := link.Listen(lcB, "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { trB.Close() })
	if err := trB.Serve(func(ctx context.Context, req *llm.Request) (*llm.Response, error) {
		res, err := gw.Do(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Response, nil
	}); err != nil {
		return fail(err)
	}

	udp, err := relay.Start(relay.Config{Target: trB.Addr().String(), UDPListen: "127.0.0.1:0"})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { udp.Close() })
	tcp, err := relay.Start(relay.Config{Target: ln.Addr().String(), TCPListen: "127.0.0.1:0"})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { tcp.Close() })

	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { echo.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	ping, err := relay.Start(relay.Config{Target: echo.LocalAddr().String(), UDPListen: "127.0.0.1:0"})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { ping.Close() })
	pingC, err := net.Dial("udp", ping.UDPAddr())
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { pingC.Close() })

	// A's side: a link transport and two HTTP clients.
	lcA := link.DefaultConfig()
	lcA.NodeID, lcA.Certificate, lcA.CAs, lcA.Logger = "edge-a", certA, ca.Pool(), quiet
	reg := prometheus.NewRegistry()
	lcA.Registerer = reg
	trA, err := link.Listen(lcA, "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { trA.Close() })
	peer, err := trA.Peer("edge-b", udp.UDPAddr())
	if err != nil {
		return fail(err)
	}
	closers = append(closers, peer.Close)

	clientTLS := func() *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "edge-b", Certificates: []tls.Certificate{certA}}
	}
	h1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   clientTLS(),
		DisableKeepAlives: true, // a new TCP+TLS connection per request
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(), ForceAttemptHTTP2: true}}
	closers = append(closers, h2.CloseIdleConnections)
	b := &bench{reg: reg, gw: gw, udp: udp, tcp: tcp, ping: ping, pingC: pingC, peer: peer, h1: h1, h2: h2, httpURL: "https://" + tcp.TCPAddr()}
	// Check that HTTP/2 really is HTTP/2.
	req, _ := http.NewRequest(http.MethodGet, b.httpURL+"/v1/models", nil)
	if resp, err := h2.Do(req); err != nil {
		return fail(err)
	} else {
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			return fail(fmt.Errorf("HTTP/2 client got %s", resp.Proto))
		}
	}
	return b, cleanup, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
