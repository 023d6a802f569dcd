// Package distribution wires a control node's share of routing table
// distribution in one place: the embedded NATS server, clustered with the
// other control nodes' (or a connection to an existing NATS cluster
// instead), and the publisher that compiles, publishes and answers
// snapshots, with its status served over HTTP for `meridianctl status`.
//
// It must never log or serve a NATS credential.
package distribution

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/control/publish"
	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/control/usage"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"google.golang.org/protobuf/proto"
)

// Node is the control node's Raft member (*cluster.Node).
type Node interface {
	ID() string
	Name() string
	FSM() *fsm.FSM
	IsLeader() bool
	Apply(t fsm.Type, msg proto.Message) (*controlv1.Result, error)
}

// Config configures a control node's distribution.
type Config struct {
	// NATSURLs point at an existing NATS cluster; empty runs the
	// embedded server. They must not carry credentials.
	NATSURLs []string
	// Listen is the embedded server's client address, host:port.
	Listen string
	// ClusterListen is the embedded server's route address, host:port;
	// empty runs it alone.
	ClusterListen string
	// Routes are the other control nodes' ClusterListen addresses.
	Routes []string
	// User and Password, or Token, authenticate edges and control nodes
	// to NATS (and the embedded servers' routes to each other).
	User     string
	Password string
	Token    string
	// TLSCert and TLSKey (PEM files) make the embedded server require
	// TLS from clients, and from the other control nodes' servers on the
	// route listener (mutual TLS, checked against TLSCA); a listener
	// that is not loopback must have it; TLSCA (PEM) is the CA a node checks NATS servers
	// against: an existing cluster's, or its own (whose certificate must
	// then name 127.0.0.1 when it listens on every interface, or its
	// listen address otherwise).
	TLSCert, TLSKey, TLSCA string
	// LeafListen, when set, is the embedded server's leafnode address,
	// host:port, which regional leaf nodes (`meridian-control leaf`,
	// control/leaf) connect to; it serves TLS with TLSCert when given,
	// and needs it beyond loopback.
	LeafListen string
	// LeafPassword is the leaf credential (user natsd.LeafUser) the
	// regional leaves authenticate with; required with LeafListen.
	LeafPassword string
	// EdgeIdentities admits edges to the embedded server by the nkeys
	// they registered when they joined (control/api join.go), each
	// allowed only its own reports; a revoked node's connections are
	// closed as the revocation applies.
	EdgeIdentities bool
	// KEK opens the table-signing key in the replicated state
	// (control/seal); nil opens only one stored in the clear.
	KEK *seal.KEK
	// Secrets bounds providers' secret_refs in published tables.
	Secrets tablewire.SecretPolicy
	// JetStreamDir, when set with the embedded server, runs JetStream
	// with its store there and the usage aggregation (control/usage):
	// edges' usage records reach the replicated spend and budgets. The
	// stream has min(3, control nodes) replicas when the servers are
	// clustered.
	JetStreamDir string
	// UsageFlushInterval is the longest a usage record waits before its
	// batch is proposed. Default 300 ms.
	UsageFlushInterval time.Duration
	// HeartbeatInterval is the leader's heartbeat period. Default 1 s.
	HeartbeatInterval time.Duration
	// MaxTableBytes caps a compiled table, bytes. Default 4 MiB.
	MaxTableBytes int
	// ReadTokens are the bearer tokens the status handler accepts (the
	// API's admin and read-only tokens).
	ReadTokens []string
	// Logger receives logs; Registerer receives metrics (nil: none).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults: an embedded server on
// 127.0.0.1:4222, not clustered; credentials must still be set.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:4222", HeartbeatInterval: time.Second, MaxTableBytes: 4 << 20, Logger: slog.Default()}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if (c.User == "" || c.Password == "") && c.Token == "" {
		errs = append(errs, errors.New("distribution: NATS needs a user and password, or a token"))
	}
	for _, u := range c.NATSURLs {
		if strings.Contains(u, "@") {
			errs = append(errs, errors.New("distribution: NATS URLs must not carry credentials"))
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("distribution: give the NATS TLS certificate and key together"))
	}
	if c.TLSCert != "" && c.TLSCA == "" {
		errs = append(errs, errors.New("distribution: a NATS TLS certificate needs the CA that signed it, which the node checks its own server against"))
	}
	if c.LeafListen != "" && len(c.NATSURLs) > 0 {
		errs = append(errs, errors.New("distribution: a leaf listener needs the embedded server, not an existing NATS cluster"))
	}
	if c.LeafListen != "" && c.LeafPassword == "" {
		errs = append(errs, errors.New("distribution: a leaf listener needs the leaf credential (MERIDIAN_NATS_LEAF_PASSWORD)"))
	}
	if c.HeartbeatInterval <= 0 || c.MaxTableBytes < 1024 {
		errs = append(errs, errors.New("distribution: heartbeat interval and table cap must be positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("distribution: logger is required"))
	}
	return errors.Join(errs...)
}

// Distribution is a running control node's distribution.
type Distribution struct {
	ns     *natsd.Server // nil with an existing cluster
	nc     *nats.Conn
	pub    *publish.Publisher
	agg    *usage.Aggregator // nil without JetStream
	tokens []string
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts the embedded server (unless NATSURLs are given), connects
// and runs the publisher until Close.
func Start(cfg Config, node Node) (*Distribution, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Distribution{tokens: cfg.ReadTokens, done: make(chan struct{})}
	urls := cfg.NATSURLs
	var clientTLS *tls.Config
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("distribution: NATS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("distribution: NATS CA holds no PEM certificate")
		}
		clientTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if len(urls) == 0 {
		ncfg := natsd.DefaultConfig()
		ncfg.Name, ncfg.Listen, ncfg.ClusterListen, ncfg.Routes = node.Name(), cfg.Listen, cfg.ClusterListen, cfg.Routes
		ncfg.User, ncfg.Password, ncfg.Token, ncfg.Logger = cfg.User, cfg.Password, cfg.Token, cfg.Logger
		if cfg.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("distribution: NATS TLS: %w", err)
			}
			ncfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			if cfg.ClusterListen != "" {
				// Routes are mutual TLS with the same certificate, which
				// the other control nodes' servers check against TLSCA.
				ncfg.ClusterTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
					RootCAs: clientTLS.RootCAs, ClientCAs: clientTLS.RootCAs, ClientAuth: tls.RequireAndVerifyClientCert}
			}
		}
		ncfg.LeafListen, ncfg.LeafPassword = cfg.LeafListen, cfg.LeafPassword
		if ncfg.TLS != nil && cfg.LeafListen != "" {
			ncfg.LeafTLS = ncfg.TLS.Clone()
		}
		if cfg.EdgeIdentities {
			ncfg.Identities = &fsmIdentities{f: node.FSM()}
		}
		ncfg.StoreDir = cfg.JetStreamDir
		ns, err := natsd.Start(ncfg)
		if err != nil {
			return nil, err
		}
		d.ns, urls = ns, []string{loopback(ns.ClientURL())}
	}
	opts := []nats.Option{
		nats.Name("meridian-control " + node.Name()),
		nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500 * time.Millisecond), nats.ReconnectJitter(500*time.Millisecond, time.Second),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	} else {
		opts = append(opts, nats.Token(cfg.Token))
	}
	switch {
	case d.ns != nil && cfg.TLSCert == "":
		// The node's own server lives and dies with it: talk to it in
		// process, without the network. (An in-process connection to a
		// TLS server stalls in the server's TLS sniffing, so with TLS
		// the node dials its server like an edge does.)
		opts = append(opts, nats.InProcessServer(d.ns))
	case clientTLS != nil:
		opts = append(opts, nats.Secure(clientTLS))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		d.closeNATS()
		return nil, fmt.Errorf("distribution: connect: %w", err)
	}
	d.nc = nc
	pcfg := publish.DefaultConfig()
	pcfg.Conn, pcfg.Source, pcfg.IsLeader, pcfg.NodeID = nc, node.FSM(), node.IsLeader, node.ID()
	pcfg.HeartbeatInterval, pcfg.Compile.MaxBytes = cfg.HeartbeatInterval, cfg.MaxTableBytes
	pcfg.Logger, pcfg.Registerer, pcfg.KEK = cfg.Logger, cfg.Registerer, cfg.KEK
	pcfg.Compile.Secrets = cfg.Secrets
	if d.pub, err = publish.New(pcfg); err != nil {
		d.closeNATS()
		return nil, err
	}
	if d.ns != nil && cfg.JetStreamDir != "" {
		ucfg := usage.DefaultConfig()
		ucfg.Conn, ucfg.Node, ucfg.Replicas = nc, node, min(3, d.ns.JetStreamPeers())
		ucfg.Logger, ucfg.Registerer = cfg.Logger, cfg.Registerer
		if cfg.UsageFlushInterval > 0 {
			ucfg.FlushInterval = cfg.UsageFlushInterval
		}
		if d.agg, err = usage.New(ucfg); err != nil {
			d.closeNATS()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		defer close(d.done)
		if d.agg != nil {
			done := make(chan struct{})
			defer func() { <-done }()
			go func() { defer close(done); d.agg.Run(ctx) }()
			jobsDone := make(chan struct{})
			defer func() { <-jobsDone }()
			go func() { defer close(jobsDone); ensureJobs(ctx, nc, min(3, d.ns.JetStreamPeers()), cfg.Logger) }()
		}
		if d.ns != nil && cfg.EdgeIdentities {
			go d.watchRevocations(ctx, node.FSM(), cfg.Logger)
		}
		if err := d.pub.Run(ctx); err != nil {
			cfg.Logger.Error("table publisher stopped", "err", err)
		}
	}()
	return d, nil
}

// loopback turns a URL on an unspecified address ("0.0.0.0", "[::]")
// into one on 127.0.0.1, which the node dials its own server at.
func loopback(u string) string {
	for _, any := range []string{"://0.0.0.0:", "://[::]:"} {
		if i := strings.Index(u, any); i >= 0 {
			return u[:i] + "://127.0.0.1:" + u[i+len(any):]
		}
	}
	return u
}

// ClientURL returns the embedded server's client URL, "" with an
// existing cluster.
func (d *Distribution) ClientURL() string {
	if d.ns == nil {
		return ""
	}
	return d.ns.ClientURL()
}

// ClusterAddr returns the embedded server's route address, "" when it
// is not clustered.
func (d *Distribution) ClusterAddr() string {
	if d.ns == nil {
		return ""
	}
	return d.ns.ClusterAddr()
}

// LeafAddr returns the embedded server's leafnode address, "" without
// one.
func (d *Distribution) LeafAddr() string {
	if d.ns == nil {
		return ""
	}
	return d.ns.LeafAddr()
}

// Usage returns the node's usage aggregator, nil without JetStream.
func (d *Distribution) Usage() *usage.Aggregator { return d.agg }

// Status returns the node's view of distribution.
func (d *Distribution) Status() publish.Status { return d.pub.Status() }

// Close stops the publisher, the connection and the embedded server.
func (d *Distribution) Close() {
	d.cancel()
	<-d.done
	d.closeNATS()
}

func (d *Distribution) closeNATS() {
	if d.nc != nil {
		d.nc.Close()
	}
	if d.ns != nil {
		d.ns.Shutdown()
	}
}

// StatusPath is where Handler is served.
const StatusPath = "/v1/control/distribution"

// Handler serves Status as JSON to a bearer of one of the read tokens.
func (d *Distribution) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.authorized(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"a valid bearer token is required"}}` + "\n"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.Status())
	})
}

func (d *Distribution) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	for _, t := range d.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
			return true
		}
	}
	return false
}

// ensureJobs creates the batch streams (shared/jobswire) with replicas
// copies, which edges use but may not create. Every control node does,
// idempotently, retrying until JetStream (clustered: its quorum) answers.
func ensureJobs(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger) {
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error("batch streams", "err", err)
		return
	}
	retry := backoff.Policy{Base: 500 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}
	for attempt := 0; ; attempt++ {
		// Short attempts: a request sent before JetStream's cluster has
		// a meta leader waits out its whole timeout.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := jobswire.Ensure(cctx, js, replicas)
		cancel()
		if err == nil {
			return
		}
		if attempt == 5 {
			log.Warn("batch streams not created yet; batches answer 503 until they are", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry.Delay(attempt)):
		}
	}
}
