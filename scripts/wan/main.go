// Command wan is a userspace WAN emulator: it relays UDP and TCP to one
// target, adding one-way delay, jitter and UDP loss in each direction,
// and can partition the path through a small admin API on 127.0.0.1.
// This kernel has no netem; see shared/testkit/relay.
//
//	go run ./scripts/wan -target 127.0.0.1:7443 -udp 127.0.0.1:17443 -delay 20ms -admin 127.0.0.1:17000
//	curl -X POST '127.0.0.1:17000/partition?on=true'
//	curl -X POST '127.0.0.1:17000/set?delay=40ms&loss=0.01'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/relay"
)

func main() {
	var cfg relay.Config
	var admin string
	flag.StringVar(&cfg.Target, "target", "", "host:port to relay to (required)")
	flag.StringVar(&cfg.UDPListen, "udp", "", "UDP listen address, such as 127.0.0.1:17443 (empty: no UDP)")
	flag.StringVar(&cfg.TCPListen, "tcp", "", "TCP listen address (empty: no TCP)")
	flag.DurationVar(&cfg.Delay, "delay", 0, "one-way delay added in each direction")
	flag.DurationVar(&cfg.Jitter, "jitter", 0, "extra random delay, uniform in [0, jitter)")
	flag.Float64Var(&cfg.Loss, "loss", 0, "probability a UDP datagram is dropped, 0 to 1")
	flag.StringVar(&admin, "admin", "127.0.0.1:0", "admin API address (keep it on loopback)")
	delayFrom := flag.String("delay-from", "", "extra UDP delay per client, comma-separated host:port=duration (a peer's QUIC address and its distance)")
	flag.Parse()
	if *delayFrom != "" {
		cfg.DelayFrom = map[string]time.Duration{}
		for _, kv := range strings.Split(*delayFrom, ",") {
			addr, d, ok := strings.Cut(strings.TrimSpace(kv), "=")
			dur, err := time.ParseDuration(d)
			if !ok || err != nil {
				log.Fatalf("-delay-from: %q is not host:port=duration", kv)
			}
			cfg.DelayFrom[addr] = dur
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, admin); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg relay.Config, admin string) error {
	r, err := relay.Start(cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	ln, err := net.Listen("tcp", admin)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: r.AdminHandler()}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Printf("wan: relaying to %s udp=%s tcp=%s delay=%v jitter=%v loss=%v admin=http://%s\n",
		cfg.Target, r.UDPAddr(), r.TCPAddr(), cfg.Delay, cfg.Jitter, cfg.Loss, ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
