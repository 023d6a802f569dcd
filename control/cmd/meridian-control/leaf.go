package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-mesh/meridian/control/leaf"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// leafUsage is `meridian-control leaf -help`'s preamble.
const leafUsage = `Usage: meridian-control leaf -hub HOST:PORT[,...] -table-public-key ed25519:... [flags]

Runs a regional NATS leaf node under the control plane: a NATS server that
connects to the control nodes' leafnode listeners (-nats-leaf-listen) and
that the region's edges connect to (their control.nats_urls), with a table
keeper that keeps the control plane's last signed snapshot on disk and
answers the region's snapshot requests while the control plane is
unreachable. Edges authenticate as on the control plane (their own nkeys,
admitted from the table, or MERIDIAN_NATS_TOKEN) and get the same subject
permissions. Credentials come from the environment only:

  MERIDIAN_NATS_LEAF_PASSWORD  the leaf credential the control nodes were given (required)
  MERIDIAN_NATS_TOKEN          the control plane's shared NATS token, for edges without identities (optional)

Flags:
`

// LeafConfig is `meridian-control leaf`'s configuration.
type LeafConfig struct {
	// Name names the leaf server and its keeper. Default: the host name.
	Name string
	// Region is the region the leaf serves, for logs.
	Region string
	// DataDir holds the table cache (table.snap).
	DataDir string
	// Hub are the control nodes' leafnode addresses, host:port.
	Hub []string
	// HubCA (PEM) is the CA the control nodes' NATS certificates are
	// checked against; required unless every hub address is loopback.
	HubCA string
	// Listen is the client address the region's edges connect to.
	Listen string
	// TLSCert and TLSKey (PEM) make the client listener require TLS;
	// required beyond loopback.
	TLSCert, TLSKey string
	// TableKeys are the table public keys ("ed25519:..."); ClusterID the
	// control plane's cluster ID ("" follows the first table's).
	TableKeys []string
	ClusterID string
	// HTTPAddr serves GET /v1/leaf/status, /metrics and /healthz; "" is
	// off.
	HTTPAddr string
	// PingInterval is how often the leaf pings the hub (and its
	// clients): a stalled hub connection is dropped after about three
	// intervals and the keeper starts answering. Default 2 s.
	PingInterval time.Duration
	// LeafPassword authenticates the leaf to the hub
	// (MERIDIAN_NATS_LEAF_PASSWORD); Token admits token edges
	// (MERIDIAN_NATS_TOKEN).
	LeafPassword, Token string
	LogLevel            string
}

// DefaultLeafConfig returns the defaults.
func DefaultLeafConfig() LeafConfig {
	return LeafConfig{Name: hostname(), DataDir: "/var/lib/meridian/leaf", Listen: "127.0.0.1:4222", PingInterval: 2 * time.Second, LogLevel: "info"}
}

// Validate checks the config; each problem names its flag.
func (c *LeafConfig) Validate() error {
	var errs []error
	if len(c.Hub) == 0 {
		errs = append(errs, errors.New("-hub: give the control nodes' leafnode addresses (their -nats-leaf-listen)"))
	}
	remote := false
	for _, h := range c.Hub {
		host, _, err := net.SplitHostPort(h)
		if err != nil || strings.Contains(h, "://") {
			errs = append(errs, fmt.Errorf("-hub: %q is not host:port", h))
			continue
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			remote = true
		}
	}
	if remote && c.HubCA == "" {
		errs = append(errs, errors.New("-hub-tls-ca: a hub beyond loopback is reached over TLS, checked against this CA"))
	}
	if len(c.TableKeys) == 0 {
		errs = append(errs, errors.New("-table-public-key: required (meridianctl table-key prints it)"))
	}
	for _, k := range c.TableKeys {
		if _, err := tablewire.ParsePublicKey(k); err != nil {
			errs = append(errs, fmt.Errorf("-table-public-key: %w", err))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir: required"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-nats-tls-cert and -nats-tls-key go together"))
	}
	if c.PingInterval < 100*time.Millisecond {
		errs = append(errs, errors.New("-ping-interval: at least 100ms"))
	}
	if c.LeafPassword == "" {
		errs = append(errs, errors.New("MERIDIAN_NATS_LEAF_PASSWORD: the leaf credential is required"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("-name: required"))
	}
	return errors.Join(errs...)
}

// leafMain parses `meridian-control leaf`'s flags and runs the leaf.
func leafMain(args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := DefaultLeafConfig()
	fs := flag.NewFlagSet("meridian-control leaf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, leafUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Name, "name", cfg.Name, "name of this leaf (its NATS server name)")
	fs.StringVar(&cfg.Region, "region", "", "region this leaf serves, for logs")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "folder for the table cache")
	hub := fs.String("hub", "", "comma-separated leafnode addresses (host:port) of the control nodes (their -nats-leaf-listen)")
	fs.StringVar(&cfg.HubCA, "hub-tls-ca", "", "PEM CA the control nodes' NATS certificates are checked against; the hub is then reached over TLS")
	fs.StringVar(&cfg.Listen, "nats-listen", cfg.Listen, "client address the region's edges connect to, host:port")
	fs.StringVar(&cfg.TLSCert, "nats-tls-cert", "", "PEM certificate: the client listener requires TLS (required beyond loopback)")
	fs.StringVar(&cfg.TLSKey, "nats-tls-key", "", "PEM key for -nats-tls-cert")
	keys := fs.String("table-public-key", getenv("MERIDIAN_TABLE_PUBLIC_KEY"), "comma-separated table public keys, ed25519:... (or MERIDIAN_TABLE_PUBLIC_KEY)")
	fs.StringVar(&cfg.ClusterID, "cluster-id", "", "the control plane's cluster ID (default: the first table's)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "", "address serving GET /v1/leaf/status, /metrics and /healthz (default: off)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", cfg.PingInterval, "how often the hub connection is pinged; a stalled one is dropped after about three")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn, error or off")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.Hub, cfg.TableKeys = splitList(*hub), splitList(*keys)
	cfg.LeafPassword, cfg.Token = getenv("MERIDIAN_NATS_LEAF_PASSWORD"), getenv("MERIDIAN_NATS_TOKEN")
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	return runLeaf(ctx, cfg, newLogger(cfg.LogLevel))
}

// runLeaf runs the leaf server and its keeper until ctx ends.
func runLeaf(ctx context.Context, cfg LeafConfig, logger *slog.Logger) error {
	var pub []ed25519.PublicKey
	for _, s := range cfg.TableKeys {
		k, err := tablewire.ParsePublicKey(s)
		if err != nil {
			return err
		}
		pub = append(pub, k)
	}
	kcfg := leaf.DefaultConfig()
	kcfg.Name, kcfg.Keys, kcfg.ClusterID, kcfg.Logger = cfg.Name, pub, cfg.ClusterID, logger.With("region", cfg.Region)
	kcfg.CachePath = filepath.Join(cfg.DataDir, "table.snap")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	kcfg.Registerer = reg
	keeper, err := leaf.New(kcfg)
	if err != nil {
		return err
	}
	ncfg := natsd.DefaultConfig()
	ncfg.Name, ncfg.Listen, ncfg.Hub, ncfg.HubPassword, ncfg.Logger = cfg.Name, cfg.Listen, cfg.Hub, cfg.LeafPassword, logger
	ncfg.PingInterval, ncfg.MaxPingsOut = cfg.PingInterval, 2
	ncfg.Identities = keeper
	// The keeper's own credential: random, in process only, unless the
	// control plane's token is given for token edges.
	ncfg.Token = cfg.Token
	if ncfg.Token == "" {
		b := make([]byte, 32)
		rand.Read(b)
		ncfg.Token = hex.EncodeToString(b)
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("leaf: NATS TLS: %w", err)
		}
		ncfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.HubCA != "" {
		pem, err := os.ReadFile(cfg.HubCA)
		if err != nil {
			return fmt.Errorf("leaf: hub CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("leaf: hub CA holds no PEM certificate")
		}
		ncfg.HubTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ns, err := natsd.Start(ncfg)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	keeper.OnIdentities = func() {
		if n := ns.Refresh(); n > 0 {
			logger.Info("closed the NATS connections of edges the table no longer admits", "connections", n)
		}
	}
	opts := []nats.Option{nats.Name("meridian-leaf " + cfg.Name), nats.Token(ncfg.Token), nats.MaxReconnects(-1)}
	if ncfg.TLS == nil {
		opts = append(opts, nats.InProcessServer(ns))
	} else {
		// An in-process connection stalls in a TLS server's sniffing
		// (distribution.go): dial it, and accept only its own
		// certificate (pinned: whatever names or CA it carries).
		own := ncfg.TLS.Certificates[0].Certificate[0]
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || !bytes.Equal(raw[0], own) {
					return errors.New("leaf: the NATS server is not this leaf's own")
				}
				return nil
			}}))
	}
	nc, err := nats.Connect(loopbackURL(ns.ClientURL()), opts...)
	if err != nil {
		return fmt.Errorf("leaf: connect to own server: %w", err)
	}
	defer nc.Close()
	logger.Info("regional leaf node", "region", cfg.Region, "nats", ns.ClientURL(), "hub", strings.Join(cfg.Hub, ","))
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("leaf: http: %w", err)
		}
		srv := &http.Server{Handler: leafHandler(keeper, reg), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		logger.Info("leaf status", "http", ln.Addr().String())
	}
	return keeper.Run(ctx, nc, ns.HubConnected)
}

// leafHandler serves the keeper's status and metrics: no credentials,
// no table contents.
func leafHandler(k *leaf.Keeper, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/leaf/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(k.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

// loopbackURL turns a URL on an unspecified address into one on
// 127.0.0.1.
func loopbackURL(u string) string {
	for _, any := range []string{"://0.0.0.0:", "://[::]:"} {
		if i := strings.Index(u, any); i >= 0 {
			return u[:i] + "://127.0.0.1:" + u[i+len(any):]
		}
	}
	return u
}
