package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/console"
	"github.com/meridian-mesh/meridian/control/distribution"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/telemetry"
)

// Config is one control node's whole configuration.
type Config struct {
	// DataDir holds the node ID, Raft log and snapshots.
	DataDir string
	// NodeName is a human name for the node.
	NodeName string
	// NodeID is the Raft server ID to create on first start; empty means
	// a random UUID.
	NodeID string
	// RaftAddr is the Raft listen address, host:port.
	RaftAddr string
	// RaftAdvertise is the Raft address others dial; empty means RaftAddr.
	RaftAdvertise string
	// HTTPAddr is the management API's listen address, host:port.
	HTTPAddr string
	// APIAdvertise is the API URL others forward writes to; empty means
	// "http://" + HTTPAddr.
	APIAdvertise string
	// Bootstrap starts a single-node cluster when DataDir is empty.
	Bootstrap bool
	// BootstrapExpect starts a cluster of this many voters, found by
	// asking Join's API addresses for their IDs, when DataDir is empty.
	BootstrapExpect int
	// Join lists the other voters' API URLs, for BootstrapExpect.
	Join []string
	// Peers is an explicit bootstrap list (id=raft address), the same on
	// every voter.
	Peers []cluster.Peer
	// AdminTokens and ReadTokens are the API's bearer tokens, the same
	// on every node.
	AdminTokens []string
	ReadTokens  []string
	// NATS is how the routing table reaches the edges (distribution.go):
	// flags fill its addresses and TLS files, the environment its
	// credentials, startDistribution the rest.
	NATS distribution.Config
	// Raft timings and snapshots; zero keeps cluster.DefaultConfig's
	// (cluster.Config documents each, and why).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64
	// SnapshotInterval is how often the threshold is checked.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log.
	TrailingLogs uint64
	// LogLevel is debug, info, warn, error or off.
	LogLevel string
	// TLSCert and TLSKey, when set, serve the API over HTTPS (PEM files,
	// e.g. from `meridianctl tls cert`).
	TLSCert, TLSKey string
	// NodeCertTTL is how long issued node certificates are valid; 0
	// means 12h.
	NodeCertTTL time.Duration
	// TLSCA is a PEM file of the CA that signed the other nodes' API
	// certificates, trusted when forwarding to them; empty means the
	// system roots.
	TLSCA string
	// TLSClientCA, with TLSCert, makes the API require a client
	// certificate signed by this CA (PEM) from every caller, other
	// control nodes included: mutual TLS on top of the bearer tokens.
	TLSClientCA string
	// KEKFile holds the key-encryption key (32 bytes, hex or base64,
	// mode 0600; `meridianctl kek` makes one) that seals key material in
	// the replicated state (the table-signing key, the cluster CA key):
	// the same file on every control node. Set, it also enables join
	// tokens, node certificates and per-edge NATS identities. Empty
	// stores the signing key in the clear (development only; a warning
	// says so) and runs the fleet on static certificates and the shared
	// NATS credential.
	KEKFile string
	// KEKPreviousFile is the retired KEK during a rotation: it still
	// opens what it sealed, and the leader re-seals that with KEKFile.
	KEKPreviousFile string
	// RaftTLS runs Raft over mutual TLS; RaftInsecure allows plain TCP
	// off loopback (development only). cluster.Config documents both.
	RaftTLS      *cluster.RaftTLS
	RaftInsecure bool
	// OpenEndpoints serves /metrics and /v1/control/self without a token.
	OpenEndpoints bool
	// Secrets bounds providers' secret_refs: env vars with this prefix,
	// files in this directory. Edges enforce their own copy of it.
	Secrets tablewire.SecretPolicy
	// Telemetry exports a span per API write over OTLP/HTTP when an
	// endpoint is set (or OTEL_EXPORTER_OTLP_ENDPOINT is); off otherwise.
	Telemetry telemetry.Config
	// ConsoleEdges are the edges whose dry-run endpoint the web
	// console's decision explorer asks (the router runs on edges only).
	ConsoleEdges []console.Edge
}

// DefaultConfig returns the defaults: API on 127.0.0.1:7400, Raft on
// 127.0.0.1:7401, data in ./meridian-control.
func DefaultConfig() Config {
	return Config{
		DataDir:  "meridian-control",
		NodeName: hostname(),
		RaftAddr: "127.0.0.1:7401",
		HTTPAddr: "127.0.0.1:7400",
		LogLevel: "info",
		NATS:     distribution.DefaultConfig(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	modes := 0
	for _, on := range []bool{c.Bootstrap, c.BootstrapExpect > 0, len(c.Peers) > 0} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		errs = append(errs, errors.New("give one of -bootstrap, -bootstrap-expect and -peers"))
	}
	if c.BootstrapExpect > 0 && len(c.Join) < c.BootstrapExpect-1 {
		errs = append(errs, fmt.Errorf("-bootstrap-expect %d needs the other %d voters' API URLs in -join", c.BootstrapExpect, c.BootstrapExpect-1))
	}
	if len(c.AdminTokens) == 0 {
		errs = append(errs, errors.New("no admin token: set -admin-tokens or MERIDIAN_CONTROL_ADMIN_TOKENS"))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("-tls-client-ca needs -tls-cert and -tls-key"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("give -tls-cert and -tls-key together"))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http addr: %w", err))
	}
	if err := validateNATS(&c.NATS); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel)
	serverTLS, clientTLS, err := tlsConfigs(cfg)
	if err != nil {
		return err
	}
	if cfg.APIAdvertise == "" {
		scheme := "http://"
		if serverTLS != nil {
			scheme = "https://"
		}
		cfg.APIAdvertise = scheme + cfg.HTTPAddr
	}
	httpClient := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     clientTLS,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}}
	ccfg := cluster.DefaultConfig()
	ccfg.DataDir, ccfg.NodeName, ccfg.NodeID = cfg.DataDir, cfg.NodeName, cfg.NodeID
	ccfg.RaftAddr, ccfg.RaftAdvertise, ccfg.APIAddr = cfg.RaftAddr, cfg.RaftAdvertise, cfg.APIAdvertise
	ccfg.Bootstrap, ccfg.Peers, ccfg.Logger = cfg.Bootstrap, cfg.Peers, logger
	for _, t := range []struct {
		dst *time.Duration
		v   time.Duration
	}{{&ccfg.HeartbeatTimeout, cfg.HeartbeatTimeout}, {&ccfg.ElectionTimeout, cfg.ElectionTimeout}, {&ccfg.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout}, {&ccfg.SnapshotInterval, cfg.SnapshotInterval}} {
		if t.v > 0 {
			*t.dst = t.v
		}
	}
	ccfg.SnapshotThreshold, ccfg.TrailingLogs = cfg.SnapshotThreshold, cfg.TrailingLogs
	ccfg.RaftTLS, ccfg.RaftInsecure = cfg.RaftTLS, cfg.RaftInsecure
	if cfg.KEKFile != "" {
		if ccfg.KEK, err = seal.Load(cfg.KEKFile); err != nil {
			return err
		}
		if cfg.KEKPreviousFile != "" {
			old, err := seal.Load(cfg.KEKPreviousFile)
			if err != nil {
				return err
			}
			ccfg.KEK = ccfg.KEK.WithPrevious(old)
		}
		logger.Info("key material sealed with the key-encryption key", "kek", ccfg.KEK.ID())
	} else {
		logger.Warn("no key-encryption key (-kek-file): the table-signing key is stored in the clear in the Raft log and snapshots; development only")
	}
	if cfg.BootstrapExpect > 0 && !cluster.HasState(cfg.DataDir) {
		if ccfg.Peers, err = discover(ctx, cfg, serverTLS, httpClient, logger); err != nil {
			return err
		}
	}
	ln, err := listen(cfg.HTTPAddr, serverTLS)
	if err != nil {
		return err
	}
	defer ln.Close()
	node, err := cluster.Open(ccfg)
	if err != nil {
		return err
	}
	acfg := api.DefaultConfig()
	acfg.AdminTokens, acfg.ReadTokens, acfg.Logger, acfg.Client = cfg.AdminTokens, cfg.ReadTokens, logger, httpClient
	acfg.KEK, acfg.NodeCertTTL = ccfg.KEK, cfg.NodeCertTTL
	acfg.Secrets, acfg.OpenEndpoints = cfg.Secrets, cfg.OpenEndpoints
	acfg.ForwardTLSOnly = serverTLS != nil
	// One registry for the node, served at /metrics (withDistribution):
	// the API, Raft and distribution register on it.
	reg := prometheus.NewRegistry()
	acfg.Registerer = reg
	handler, err := api.New(acfg, node)
	if err != nil {
		node.Close()
		return err
	}
	dist, err := startDistribution(cfg, node, ccfg.KEK, logger, reg)
	if err != nil {
		node.Close()
		return err
	}
	if dist != nil {
		defer dist.Close() // after the API: edges move to the other nodes' servers
	}
	tracing, err := telemetry.Start(cfg.Telemetry, "meridian-control", node.ID(), "")
	if err != nil {
		node.Close()
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tracing.Shutdown(sctx)
	}()
	apiHandler := traceWrites(withDistribution(handler, dist, reg, append(append([]string{}, cfg.AdminTokens...), cfg.ReadTokens...), cfg.OpenEndpoints),
		tracing.Tracer("github.com/meridian-mesh/meridian/control/api"))
	ui, err := console.New(console.Config{API: apiHandler, Authorize: handler.Authorize, Edges: cfg.ConsoleEdges,
		Client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS}},
		Secure: serverTLS != nil, Logger: logger})
	if err != nil {
		node.Close()
		return err
	}
	srv := &http.Server{Handler: withConsole(apiHandler, ui), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("meridian-control started", "id", node.ID(), "raft", node.RaftAddr(), "api", cfg.APIAdvertise)

	select {
	case <-ctx.Done():
	case err = <-served:
	}
	logger.Info("leaving")
	leaveErr := node.Leave()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return leaveErr
}

// withConsole serves the web console at /ui beside the API.
func withConsole(apiHandler, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, ui)
	mux.Handle("/", apiHandler)
	return mux
}

// discover finds the other voters of a new cluster (cluster.Discover),
// serving this node's identity on the API address meanwhile.
func discover(ctx context.Context, cfg Config, serverTLS *tls.Config, client *http.Client, logger *slog.Logger) ([]cluster.Peer, error) {
	id, err := cluster.LoadOrCreateID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	dc := cluster.DefaultDiscoverConfig()
	dc.Self = cluster.Self{ID: id, Name: cfg.NodeName, RaftAddr: cfg.RaftAdvertise, APIAddr: cfg.APIAdvertise}
	if dc.Self.RaftAddr == "" {
		dc.Self.RaftAddr = cfg.RaftAddr
	}
	dc.Expect, dc.Join, dc.Token, dc.Client, dc.Logger = cfg.BootstrapExpect, cfg.Join, cfg.AdminTokens[0], client, logger
	if dc.Listener, err = listen(cfg.HTTPAddr, serverTLS); err != nil {
		return nil, err
	}
	return cluster.Discover(ctx, dc)
}

// tlsConfigs builds the API server's TLS config (nil for plain HTTP) and
// the forwarding client's.
func tlsConfigs(cfg Config) (server, client *tls.Config, err error) {
	client = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		if client.RootCAs, err = pki.LoadPool(cfg.TLSCA); err != nil {
			return nil, nil, err
		}
	}
	if cfg.TLSCert == "" {
		return nil, client, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	// The node's own certificate authenticates it when it forwards to a
	// leader that asks for client certificates.
	client.Certificates = []tls.Certificate{cert}
	if cfg.TLSClientCA != "" {
		if server.ClientCAs, err = pki.LoadPool(cfg.TLSClientCA); err != nil {
			return nil, nil, err
		}
		server.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return server, client, nil
}

func listen(addr string, conf *tls.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	return ln, nil
}

// traceWrites records a server span for every API write (any method but
// GET and HEAD), continuing the caller's W3C trace headers; reads are
// not traced. A nil tracer returns h itself.
func traceWrites(h http.Handler, tracer trace.Tracer) http.Handler {
	if tracer == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		ctx, span := tracer.Start(telemetry.Extract(r.Context(), r.Header), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(telemetry.HTTPMethod.String(r.Method), telemetry.HTTPRoute.String(r.URL.Path)))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(telemetry.HTTPStatus.Int(sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// statusWriter remembers the status an answer was written with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
