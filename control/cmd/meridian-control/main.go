// Command meridian-control runs one control plane node: Raft-replicated
// fleet state and the management API.
//
//	meridian-control -data-dir /var/lib/meridian -bootstrap
//	meridian-control -data-dir D -raft-addr 10.0.0.1:7401 -http-addr 10.0.0.1:7400 \
//	    -bootstrap-expect 3 -join http://10.0.0.2:7400,http://10.0.0.3:7400
//
// With NATS credentials in the environment (MERIDIAN_NATS_TOKEN, or
// -nats-user and MERIDIAN_NATS_PASSWORD) the node embeds a NATS server
// and distributes the routing table to the edges through it:
//
//	MERIDIAN_NATS_TOKEN=... meridian-control ... -nats-listen 10.0.0.1:4222 \
//	    -nats-cluster-listen 10.0.0.1:6222 -nats-routes 10.0.0.2:6222,10.0.0.3:6222 \
//	    -nats-tls-cert nats.crt -nats-tls-key nats.key -nats-tls-ca ca.crt
//
// A NATS listener beyond loopback needs TLS. With a key-encryption key
// (-kek-file or MERIDIAN_CONTROL_KEK_FILE) the node runs the cluster CA and
// edges join with `meridianctl node token` (see README "Security model").
//
// -nats-url uses an existing NATS cluster instead. Without credentials the
// node runs no distribution and says so: the bus is never run open.
//
// The web console is served at /ui with the API's tokens (README "Web
// console"); -console-edges names the edges its decision explorer asks.
//
// `meridian-control leaf` runs a regional NATS leaf node instead: a NATS
// server under the control nodes' -nats-leaf-listen that a region's edges
// connect to, with a keeper that serves the region its last table while
// the control plane is unreachable (control/leaf; `meridian-control leaf
// -help`, README "Regional leaf nodes"):
//
//	MERIDIAN_NATS_LEAF_PASSWORD=... meridian-control leaf -region eu-west \
//	    -hub 10.0.0.1:7422,10.0.0.2:7422 -hub-tls-ca ca.crt -nats-listen 10.1.0.1:4222 \
//	    -nats-tls-cert leaf.crt -nats-tls-key leaf.key -table-public-key ed25519:...
//
// SIGTERM or SIGINT leaves gracefully: a leader hands leadership over
// before it stops. The node stays a voter; `meridianctl cluster remove`
// takes it out of the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/console"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "leaf" {
		if err := leafMain(os.Args[2:], os.Getenv, os.Stderr); err != nil && !errors.Is(err, context.Canceled) {
			fatal(err)
		}
		return
	}
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("meridian-control", flag.ExitOnError)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "folder for the node ID, Raft log and snapshots")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "human name of this node")
	fs.StringVar(&cfg.NodeID, "node-id", "", "Raft server ID to create on first start (default: a random UUID)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft TCP listen address, host:port")
	fs.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "Raft address other nodes dial (default: -raft-addr)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "management API listen address, host:port")
	fs.StringVar(&cfg.APIAdvertise, "api-advertise", "", "API URL other nodes forward writes to (default: http://<http-addr>)")
	fs.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new single-node cluster if the data dir is empty")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "start a new cluster of this many voters, found through -join, if the data dir is empty")
	join := fs.String("join", "", "comma-separated API URLs of the other voters, for -bootstrap-expect")
	peers := fs.String("peers", "", "comma-separated id=raft-host:port of every voter, this one included, to bootstrap with")
	admin := fs.String("admin-tokens", "", "comma-separated admin tokens (or MERIDIAN_CONTROL_ADMIN_TOKENS)")
	read := fs.String("read-tokens", "", "comma-separated read-only tokens (or MERIDIAN_CONTROL_READ_TOKENS)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate to serve the API over HTTPS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key for -tls-cert")
	fs.StringVar(&cfg.TLSClientCA, "tls-client-ca", "", "PEM CA whose client certificates the API requires (mutual TLS; needs -tls-cert)")
	fs.StringVar(&cfg.TLSCA, "tls-ca", "", "PEM CA certificate trusted for the other nodes' APIs (default: system roots)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", 0, "how long a follower waits for the leader before standing for election (default 200ms)")
	fs.DurationVar(&cfg.ElectionTimeout, "raft-election-timeout", 0, "how long a candidate waits for votes (default 200ms)")
	fs.DurationVar(&cfg.LeaderLeaseTimeout, "raft-lease-timeout", 0, "how long a leader leads without a quorum's contact (default 150ms)")
	fs.Uint64Var(&cfg.SnapshotThreshold, "raft-snapshot-threshold", 0, "log entries that trigger a snapshot (default 8192)")
	fs.DurationVar(&cfg.SnapshotInterval, "raft-snapshot-interval", 0, "how often the snapshot threshold is checked (default 2m)")
	fs.Uint64Var(&cfg.TrailingLogs, "raft-trailing-logs", 0, "log entries a snapshot leaves behind (default 10240)")
	fs.StringVar(&cfg.KEKFile, "kek-file", os.Getenv("MERIDIAN_CONTROL_KEK_FILE"), "key-encryption key file sealing the table-signing and cluster CA keys in Raft (or MERIDIAN_CONTROL_KEK_FILE); the same on every node; enables join tokens and node certificates")
	fs.StringVar(&cfg.Secrets.EnvPrefix, "secret-env-prefix", tablewire.DefaultSecretEnvPrefix, "the only environment variables a provider's secret_ref may name start with this")
	fs.StringVar(&cfg.Secrets.Dir, "secrets-dir", tablewire.DefaultSecretsDir, "the only directory a provider's file: secret_ref may name a file in")
	fs.StringVar(&cfg.KEKPreviousFile, "kek-previous-file", "", "the retired key-encryption key during a KEK rotation; the leader re-seals with -kek-file")
	raftCA := fs.String("raft-tls-ca", "", "PEM CA that signs every control node's Raft certificate; with -raft-tls-cert and -raft-tls-key, Raft runs over mutual TLS")
	raftCert := fs.String("raft-tls-cert", "", "PEM certificate of this node for Raft (naming the host of its Raft address)")
	raftKey := fs.String("raft-tls-key", "", "PEM key for -raft-tls-cert")
	fs.BoolVar(&cfg.RaftInsecure, "raft-insecure", false, "allow plain-TCP Raft on a non-loopback address (development only: anyone reaching the port can rewrite the fleet)")
	fs.BoolVar(&cfg.OpenEndpoints, "open-metrics", false, "serve /metrics and /v1/control/self without a token")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn, error or off")
	fs.StringVar(&cfg.Telemetry.OTLPEndpoint, "otlp-endpoint", "", "OTLP/HTTP collector base URL for traces of API writes, such as http://otel-collector:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT; none: tracing off)")
	fs.DurationVar(&cfg.NodeCertTTL, "node-cert-ttl", 0, "validity of node certificates issued at join and renewal (default 12h)")
	consoleEdges := fs.String("console-edges", "", "comma-separated id=http://host:port of edges whose dry run the web console's decision explorer asks")
	natsURLs, natsRoutes := natsFlags(fs, &cfg.NATS)
	fs.Parse(os.Args[1:])
	cfg.NATS.NATSURLs, cfg.NATS.Routes = splitList(*natsURLs), splitList(*natsRoutes)
	natsSecrets(&cfg.NATS, os.Getenv)

	if *raftCA != "" || *raftCert != "" || *raftKey != "" {
		cfg.RaftTLS = &cluster.RaftTLS{CAFile: *raftCA, CertFile: *raftCert, KeyFile: *raftKey}
	}
	edges, err := console.ParseEdges(*consoleEdges)
	if err != nil {
		fatal(err)
	}
	cfg.ConsoleEdges = edges
	cfg.Join = splitList(*join)
	for _, p := range splitList(*peers) {
		peer, err := cluster.ParsePeer(p)
		if err != nil {
			fatal(err)
		}
		cfg.Peers = append(cfg.Peers, peer)
	}
	cfg.AdminTokens = splitList(firstNonEmpty(*admin, os.Getenv("MERIDIAN_CONTROL_ADMIN_TOKENS")))
	cfg.ReadTokens = splitList(firstNonEmpty(*read, os.Getenv("MERIDIAN_CONTROL_READ_TOKENS")))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		fatal(err)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "meridian-control: %v\n", err)
	os.Exit(1)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func newLogger(level string) *slog.Logger {
	if level == "off" {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "control"
	}
	return h
}
