// Command minproxy is the gateway benchmark's baseline: the least a Go
// reverse proxy does to forward a request, httputil.ReverseProxy with a
// tuned transport and nothing else. The edge's added latency is judged
// against this one's. It must stay minimal: no logging per request, no
// body inspection, no retries.
//
//	go run ./scripts/bench/minproxy -listen 127.0.0.1:0 -upstream http://127.0.0.1:9100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Config is what minproxy runs with.
type Config struct {
	// Listen is the host:port to serve on; port 0 picks a free one.
	Listen string
	// Upstream is the base URL requests are forwarded to, such as
	// "http://127.0.0.1:9100"; the request path is appended.
	Upstream string
	// MaxIdleConnsPerHost is the idle upstream connections kept, so load
	// at that concurrency never dials again. Default: 1024.
	MaxIdleConnsPerHost int
	// ShutdownGrace bounds how long requests may finish after a signal.
	// Default: 5s.
	ShutdownGrace time.Duration
}

// DefaultConfig returns the configuration the command starts from.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:0", MaxIdleConnsPerHost: 1024, ShutdownGrace: 5 * time.Second}
}

// Validate checks the fields.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	u, err := url.Parse(c.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("upstream must be an http(s) base URL, got %q", c.Upstream)
	}
	if c.MaxIdleConnsPerHost < 1 {
		return errors.New("max idle conns per host must be at least 1")
	}
	if c.ShutdownGrace <= 0 {
		return errors.New("shutdown grace must be positive")
	}
	return nil
}

func main() {
	cfg := DefaultConfig()
	flag.StringVar(&cfg.Listen, "listen", cfg.Listen, "host:port to listen on (port 0: any free port)")
	flag.StringVar(&cfg.Upstream, "upstream", "", "upstream base URL, such as http://127.0.0.1:9100")
	flag.IntVar(&cfg.MaxIdleConnsPerHost, "max-idle", cfg.MaxIdleConnsPerHost, "idle upstream connections to keep")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "minproxy:", err)
		stop()
		os.Exit(1)
	}
}

// run serves until ctx ends, announcing the address on stdout once it
// accepts connections.
func run(ctx context.Context, cfg Config, stdout io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	up, _ := url.Parse(cfg.Upstream)
	tr := &http.Transport{
		Proxy:               nil, // loopback benchmarks; never via env proxies
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no total limit; the per-host one bounds it
		MaxIdleConnsPerHost: cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		// The edge asks for no compression either; decompressing would
		// also buffer SSE frames.
		DisableCompression: true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(up) },
		Transport:     tr,
		FlushInterval: -1, // flush every write, so SSE events stream through
		ErrorLog:      log.New(os.Stderr, "minproxy: ", log.LstdFlags),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// By default the HTTP/1 server closes the request body once the
	// response starts; the transport may still be reading it then (to
	// check nothing follows Content-Length), fail, and cut the upstream
	// connection mid-response when the upstream answers fast (golang/go
	// issue 40747). Full duplex keeps the body open.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "minproxy: listening on http://%s\n", ln.Addr())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return err
	}
	tr.CloseIdleConnections()
	return nil
}
