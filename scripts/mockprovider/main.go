// Command mockprovider serves a mock LLM provider that speaks a real
// provider's wire format (OpenAI's, Anthropic's, Gemini's or Ollama's
// native API, chosen with -kind), for tests, benchmarks and the quick start. It never calls out to the network. See package
// shared/testkit/providermock for the endpoints and the "#mock" directives.
//
//	go run ./scripts/mockprovider -addr 127.0.0.1:9100 -chunk-delay 20ms
//	go run ./scripts/mockprovider -addr 127.0.0.1:9101 -kind anthropic
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// shutdownGrace bounds how long running requests may take to finish after
// a signal.
const shutdownGrace = 5 * time.Second

type app struct {
	addr   string
	cfg    providermock.Config
	stdout io.Writer
}

func main() {
	a := app{cfg: providermock.DefaultConfig(), stdout: os.Stdout}
	flag.StringVar(&a.addr, "addr", "127.0.0.1:9100", "address to listen on")
	flag.StringVar(&a.cfg.Kind, "kind", a.cfg.Kind, "provider wire format to speak: openai, anthropic, gemini, ollama, azure, bedrock or vertex (the mock then checks no SigV4 signature or OAuth token)")
	flag.StringVar(&a.cfg.APIKey, "api-key", "", "if set, requests must carry the key in the kind's header (Bearer for openai and ollama, x-api-key for anthropic, x-goog-api-key or ?key= for gemini, api-key for azure)")
	flag.DurationVar(&a.cfg.Latency, "latency", 0, "delay before response headers")
	flag.DurationVar(&a.cfg.ChunkDelay, "chunk-delay", 0, "delay between streamed chunks")
	flag.IntVar(&a.cfg.Chunks, "chunks", a.cfg.Chunks, "default number of content chunks in an answer")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mockprovider: unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	a.cfg.Logf = logger.Printf

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "mockprovider: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts down gracefully.
func (a *app) run(ctx context.Context) error {
	srv, err := providermock.New(a.cfg)
	if err != nil {
		return err
	}
	base, err := srv.Start(a.addr)
	if err != nil {
		return err
	}
	kind := a.cfg.Kind
	if kind == "" {
		kind = providermock.KindOpenAI
	}
	fmt.Fprintf(a.stdout, "mockprovider: listening on %s (kind=%s)\n", base, kind)

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return srv.Close()
		}
		return err
	}
	return nil
}
