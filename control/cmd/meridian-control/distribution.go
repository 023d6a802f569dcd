package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/distribution"
	"github.com/meridian-mesh/meridian/control/seal"
)

// natsEnabled reports whether credentials were given: the bus carries
// the routing table and is never run open, so without credentials the
// node runs without distribution and says so. Credentials come from the
// environment only, never from flags, which other users can read.
func natsEnabled(n *distribution.Config) bool {
	return n.Token != "" || n.User != "" && n.Password != ""
}

// natsFlags registers the NATS flags; the lists are split after parsing.
func natsFlags(fs *flag.FlagSet, n *distribution.Config) (urls, routes *string) {
	urls = fs.String("nats-url", "", "comma-separated URLs of an existing NATS cluster to distribute the routing table through, instead of the embedded server")
	fs.StringVar(&n.Listen, "nats-listen", n.Listen, "embedded NATS server's client address, host:port (edges connect here)")
	fs.StringVar(&n.ClusterListen, "nats-cluster-listen", "", "embedded NATS server's route address, host:port, for clustering with the other control nodes")
	routes = fs.String("nats-routes", "", "comma-separated -nats-cluster-listen addresses of the other control nodes")
	fs.StringVar(&n.User, "nats-user", "", "NATS user (password from MERIDIAN_NATS_PASSWORD); without it, MERIDIAN_NATS_TOKEN authenticates")
	fs.StringVar(&n.TLSCert, "nats-tls-cert", "", "PEM certificate: the embedded NATS server requires TLS")
	fs.StringVar(&n.TLSKey, "nats-tls-key", "", "PEM key for -nats-tls-cert")
	fs.StringVar(&n.TLSCA, "nats-tls-ca", "", "PEM CA that NATS servers are checked against")
	fs.StringVar(&n.LeafListen, "nats-leaf-listen", "", "embedded NATS server's leafnode address, host:port, for regional leaf nodes (meridian-control leaf); needs MERIDIAN_NATS_LEAF_PASSWORD, and -nats-tls-cert beyond loopback")
	return urls, routes
}

// natsSecrets reads the NATS credentials from the environment.
func natsSecrets(n *distribution.Config, getenv func(string) string) {
	n.Password, n.Token = getenv("MERIDIAN_NATS_PASSWORD"), getenv("MERIDIAN_NATS_TOKEN")
	n.LeafPassword = getenv("MERIDIAN_NATS_LEAF_PASSWORD")
}

// validateNATS checks what the flags and environment gave; the
// distribution checks the rest when it starts.
func validateNATS(n *distribution.Config) error {
	if n.User != "" && n.Password == "" {
		return errors.New("-nats-user needs MERIDIAN_NATS_PASSWORD")
	}
	if n.LeafListen != "" && n.LeafPassword == "" {
		return errors.New("-nats-leaf-listen needs the leaf credential in MERIDIAN_NATS_LEAF_PASSWORD")
	}
	if !natsEnabled(n) && (len(n.NATSURLs) > 0 || n.ClusterListen != "" || len(n.Routes) > 0 || n.LeafListen != "") {
		return errors.New("NATS is configured but has no credentials: set MERIDIAN_NATS_TOKEN, or -nats-user and MERIDIAN_NATS_PASSWORD")
	}
	return nil
}

// startDistribution starts the node's table distribution, or returns nil
// when NATS has no credentials.
func startDistribution(cfg Config, node *cluster.Node, kek *seal.KEK, logger *slog.Logger, reg prometheus.Registerer) (*distribution.Distribution, error) {
	dcfg := cfg.NATS
	if !natsEnabled(&dcfg) {
		logger.Warn("routing table distribution is off: NATS has no credentials (MERIDIAN_NATS_TOKEN, or -nats-user and MERIDIAN_NATS_PASSWORD)")
		return nil, nil
	}
	dcfg.ReadTokens = append(append([]string{}, cfg.AdminTokens...), cfg.ReadTokens...)
	dcfg.EdgeIdentities = kek != nil
	dcfg.Logger, dcfg.Registerer, dcfg.KEK, dcfg.Secrets = logger, reg, kek, cfg.Secrets
	// The embedded server keeps the usage stream beside the Raft data.
	dcfg.JetStreamDir = filepath.Join(cfg.DataDir, "jetstream")
	d, err := distribution.Start(dcfg, node)
	if err != nil {
		return nil, fmt.Errorf("table distribution: %w", err)
	}
	if d.ClientURL() != "" {
		logger.Info("routing table distribution", "nats", d.ClientURL(), "cluster", d.ClusterAddr(), "leaf", d.LeafAddr())
	} else {
		logger.Info("routing table distribution through an existing NATS cluster")
	}
	return d, nil
}

// withDistribution serves the distribution status and the node's metrics
// beside the management API.
//
// The metrics need a read (or admin) token unless open.
func withDistribution(apiHandler http.Handler, d *distribution.Distribution, reg *prometheus.Registry, tokens []string, open bool) http.Handler {
	mux := http.NewServeMux()
	if d != nil {
		mux.Handle("GET "+distribution.StatusPath, d.Handler())
	}
	var metrics http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if !open {
		metrics = requireToken(tokens, metrics)
	}
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/", apiHandler)
	return mux
}

// requireToken answers 401 unless the request carries one of tokens as
// a bearer token, compared in constant time.
func requireToken(tokens []string, h http.Handler) http.Handler {
	sums := make([][32]byte, len(tokens))
	for i, t := range tokens {
		sums[i] = sha256.Sum256([]byte(t))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		ok := 0
		for _, s := range sums {
			ok |= subtle.ConstantTimeCompare(sum[:], s[:])
		}
		if tok == "" || ok == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"code":%q,"message":"a read token is required"}}`+"\n", api.CodeUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
