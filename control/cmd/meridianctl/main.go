// Command meridianctl manages a Meridian fleet through the control
// plane's management API: entities, declarative fleet files, cluster
// membership, snapshots and development TLS material.
//
//	meridianctl region ls
//	meridianctl region set eu name=Europe latitude=50.1 longitude=8.7
//	meridianctl apply -f fleet.yaml --dry-run
//	meridianctl status
//	meridianctl cluster join http://10.0.0.4:7400
//
// The address and token come from -addr and -token, or from
// MERIDIAN_CONTROL_ADDR and MERIDIAN_CONTROL_TOKEN.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/shared/pki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// errUsage marks a usage error: exit code 2 and the usage text.
var errUsage = errors.New("usage")

const usage = `meridianctl manages a Meridian fleet.

Usage:
  meridianctl [flags] KIND ls
  meridianctl [flags] KIND get ID
  meridianctl [flags] KIND set ID [field=value ...] [-f FILE]
  meridianctl [flags] KIND rm ID
  meridianctl [flags] key new ID [--tenant T] [--models a,b] [--regions r,s] [--rpm N] [--tpm N] [--expires 720h|RFC3339]
                                               make a random API key; prints it once, stores its hash
  meridianctl [flags] key disable|enable ID    refuse a key on every edge, or accept it again (rm revokes it)
  meridianctl [flags] tenant set ID [--budget USD] [--period month|week|day] [--hard-limit] [--rpm N] [--tpm N]
  meridianctl [flags] usage [--tenant T] [--key K] [--model M] [--from RFC3339] [--to RFC3339]
                    [--group-by tenant,key,model,hour|day]   spend, exact to the nano-dollar
  meridianctl [flags] node token ID [--region R] [--ttl 1h]   one-time join token for an edge; prints it once
  meridianctl [flags] node revoke ID           end a node's links, NATS access and certificate renewals
  meridianctl [flags] node identities          nodes that joined, and revocations
  meridianctl [flags] apply -f FILE [--dry-run] [--prune]
  meridianctl [flags] status
  meridianctl [flags] cluster join API_ADDR
  meridianctl [flags] cluster remove NODE_ID
  meridianctl [flags] cluster transfer
  meridianctl [flags] cluster snapshot save FILE
  meridianctl [flags] cluster snapshot restore FILE
  meridianctl [flags] table-key            print the table public key and cluster ID edges pin
  meridianctl [flags] table-key stage      create the next table key (pin it on every edge, then promote)
  meridianctl [flags] table-key promote    sign with the staged key from now on
  meridianctl kek new FILE                 write a key-encryption key for meridian-control -kek-file
  meridianctl tls ca --dir DIR [--name NAME] [--days N]
  meridianctl tls cert --ca-dir DIR --node ID [--host H]... --out DIR [--days N] [--control]
                                               --control: for a control API or NATS server, never a link peer

Kinds: region node model placement provider route key tenant price

Flags (anywhere on the line):
  -addr URL[,URL]  control API address (MERIDIAN_CONTROL_ADDR; default http://127.0.0.1:7400)
  -token TOKEN     bearer token (MERIDIAN_CONTROL_TOKEN)
  -json            print JSON instead of tables
  -stale           read from the answering node's copy instead of the leader's
  -ca-cert FILE    PEM CA to trust for an https:// address (MERIDIAN_CONTROL_CACERT)
  -client-cert FILE, -client-key FILE
                   PEM client certificate and key, for an API that requires
                   mutual TLS (MERIDIAN_CONTROL_CLIENT_CERT, MERIDIAN_CONTROL_CLIENT_KEY)
  -timeout D       overall time limit (default 60s)

set takes field=value pairs: lists are comma-separated (addresses=a:1,b:2),
maps are k:v pairs (labels=gpu:a100,tier:1), nested fields use dots
(capacity.gpus=2), and targets/fallbacks are provider[:model][=weight]
lists. The key and tenant flags above are shorthands for their fields
(--budget is monthly_budget, spent per --period).
An existing entity is updated field by field; -f reads a whole entity
from a JSON or YAML file.
`

// cli holds one invocation's settings and streams.
type cli struct {
	addr   string
	token  string
	json   bool
	stale  bool
	caCert string
	// clientCert and clientKey authenticate to an API requiring mutual
	// TLS.
	clientCert, clientKey string
	timeout               time.Duration
	stdin                 io.Reader
	stdout                io.Writer
	stderr                io.Writer

	// Command flags, shared so that they may appear anywhere.
	file    string
	dryRun  bool
	prune   bool
	dir     string
	caDir   string
	out     string
	node    string
	name    string
	days    int
	hosts   multiFlag
	region  string
	ttl     string
	control bool
	limits  limitFlags
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("meridianctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defAddr := getenv("MERIDIAN_CONTROL_ADDR")
	if defAddr == "" {
		defAddr = "http://127.0.0.1:7400"
	}
	fs.StringVar(&c.addr, "addr", defAddr, "")
	fs.StringVar(&c.token, "token", getenv("MERIDIAN_CONTROL_TOKEN"), "")
	fs.BoolVar(&c.json, "json", false, "")
	fs.BoolVar(&c.stale, "stale", false, "")
	fs.StringVar(&c.caCert, "ca-cert", getenv("MERIDIAN_CONTROL_CACERT"), "")
	fs.StringVar(&c.clientCert, "client-cert", getenv("MERIDIAN_CONTROL_CLIENT_CERT"), "")
	fs.StringVar(&c.clientKey, "client-key", getenv("MERIDIAN_CONTROL_CLIENT_KEY"), "")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "")
	fs.StringVar(&c.file, "f", "", "")
	fs.BoolVar(&c.dryRun, "dry-run", false, "")
	fs.BoolVar(&c.prune, "prune", false, "")
	fs.StringVar(&c.dir, "dir", "", "")
	fs.StringVar(&c.caDir, "ca-dir", "", "")
	fs.StringVar(&c.out, "out", "", "")
	fs.StringVar(&c.node, "node", "", "")
	fs.StringVar(&c.name, "name", "Meridian development CA", "")
	fs.IntVar(&c.days, "days", 365, "")
	fs.Var(&c.hosts, "host", "")
	fs.StringVar(&c.region, "region", "", "")
	fs.StringVar(&c.ttl, "ttl", "1h", "")
	fs.BoolVar(&c.control, "control", false, "")
	fs.StringVar(&c.limits.tenant, "tenant", "", "")
	fs.StringVar(&c.limits.models, "models", "", "")
	fs.StringVar(&c.limits.regions, "regions", "", "")
	fs.StringVar(&c.limits.rpm, "rpm", "", "")
	fs.StringVar(&c.limits.tpm, "tpm", "", "")
	fs.StringVar(&c.limits.expires, "expires", "", "")
	fs.StringVar(&c.limits.budget, "budget", "", "")
	fs.StringVar(&c.limits.period, "period", "", "")
	fs.Var(&c.limits.hardLimit, "hard-limit", "")
	fs.StringVar(&c.limits.groupBy, "group-by", "", "")
	fs.StringVar(&c.limits.key, "key", "", "")
	fs.StringVar(&c.limits.model, "model", "", "")
	fs.StringVar(&c.limits.from, "from", "", "")
	fs.StringVar(&c.limits.to, "to", "", "")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, usage)
				return exitOK
			}
			fmt.Fprintf(stderr, "meridianctl: %v\n\n%s", err, usage)
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.dispatch(ctx, pos); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "meridianctl: %v\n\n%s", err, usage)
			return exitUsage
		}
		fmt.Fprintf(stderr, "meridianctl: %v\n", err)
		return exitError
	}
	return exitOK
}

// readOpts makes reads consistent unless -stale: an operator expects to
// see what they just wrote, whichever node answers.
func (c *cli) readOpts() client.ReadOptions { return client.ReadOptions{Consistent: !c.stale} }

func (c *cli) client() (*client.Client, error) {
	// Retries cover a leader election (a few seconds) and then give up,
	// so a wrong address fails in seconds, not minutes.
	cfg := client.Config{Addrs: strings.Split(c.addr, ","), Token: c.token, RetryTimeout: 10 * time.Second}
	if c.caCert != "" || c.clientCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caCert != "" {
			pool, err := pki.LoadPool(c.caCert)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		if c.clientCert != "" {
			cert, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	return client.New(cfg)
}

func (c *cli) dispatch(ctx context.Context, pos []string) error {
	switch pos[0] {
	case "apply":
		return c.apply(ctx, pos[1:])
	case "status":
		return c.status(ctx)
	case "cluster":
		return c.cluster(ctx, pos[1:])
	case "tls":
		return c.tls(pos[1:])
	case "table-key":
		return c.tableKey(ctx, pos[1:])
	case "kek":
		return c.kek(pos[1:])
	case "usage":
		return c.usage(ctx, pos[1:])
	case "help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "node":
		if len(pos) > 1 && (pos[1] == "token" || pos[1] == "revoke" || pos[1] == "identities") {
			return c.nodeIdentity(ctx, pos[1:])
		}
	}
	return c.entity(ctx, pos)
}
