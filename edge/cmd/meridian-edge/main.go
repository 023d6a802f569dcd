// Command meridian-edge runs a Meridian edge node: an OpenAI-compatible
// gateway that serves models locally or forwards them to peers and
// upstream providers.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/node"
)

type flags struct {
	config   string
	listen   string
	nodeID   string
	region   string
	logLevel string
	seeds    string
	natsURL  string
	check    bool
}

func main() {
	var f flags
	fs := flag.NewFlagSet("meridian-edge", flag.ExitOnError)
	fs.StringVar(&f.config, "config", "", "path to the YAML config file")
	fs.StringVar(&f.listen, "listen", "", "API listen address host:port (overrides config and MERIDIAN_LISTEN)")
	fs.StringVar(&f.nodeID, "node-id", "", "node ID (overrides config and MERIDIAN_NODE_ID)")
	fs.StringVar(&f.region, "region", "", "region (overrides config and MERIDIAN_REGION)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (overrides config and MERIDIAN_LOG_LEVEL)")
	fs.StringVar(&f.seeds, "gossip-seeds", "", "comma-separated host:port of edges to join (overrides gossip.seeds)")
	fs.StringVar(&f.natsURL, "nats-url", "", "comma-separated NATS URLs of the control plane, or of an existing NATS cluster (overrides control.nats_urls and MERIDIAN_NATS_URLS)")
	fs.BoolVar(&f.check, "check", false, "validate the config and exit")
	fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "meridian-edge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, logOut io.Writer) error {
	cfg, err := config.Load(f.config, os.Getenv)
	if err != nil {
		return err
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.nodeID != "" {
		cfg.NodeID = f.nodeID
	}
	if f.region != "" {
		cfg.Region = f.region
	}
	if f.logLevel != "" {
		cfg.LogLevel = f.logLevel
	}
	if f.seeds != "" {
		cfg.Gossip.Seeds = strings.Split(f.seeds, ",")
	}
	if f.natsURL != "" {
		cfg.Control.NATSURLs = strings.Split(f.natsURL, ",")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if f.check {
		fmt.Fprintln(logOut, "config ok")
		return nil
	}
	n, err := node.New(cfg, newLogger(cfg, logOut))
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
