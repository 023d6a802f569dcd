// Command devmesh brings up a local Meridian mesh for trying it out: an
// edge node running the project's tiny model on its own Ollama (built by
// `make ollama`), in front of the project's mock providers, one per wire
// format (OpenAI, Anthropic, Gemini, Ollama). It prints requests ready to
// paste and runs until interrupted.
//
// Later capabilities (control plane, local models, peers) join here, so
// `make run` stays the one command that shows the whole system.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/node"
	"github.com/meridian-mesh/meridian/scripts/tinymodel/tinygguf"
	"github.com/meridian-mesh/meridian/shared/providermock"
)

type flags struct {
	config   string
	mockAddr string
	quiet    bool
}

func main() {
	var f flags
	flag.StringVar(&f.config, "config", "scripts/devmesh/edge.yaml", "edge config file")
	flag.StringVar(&f.mockAddr, "mock-addr", "127.0.0.1:9100", "address of the OpenAI mock; the Anthropic, Gemini and Ollama mocks take the next three ports (the config's base URLs must match)")
	flag.BoolVar(&f.quiet, "quiet", false, "log warnings only")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devmesh:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, out io.Writer) error {
	cfg, err := config.Load(f.config, os.Getenv)
	if err != nil {
		return err
	}
	if err := writeTinyModels(cfg.Local.Models); err != nil {
		return err
	}
	level := slog.LevelInfo
	if f.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// One mock per wire format, on consecutive ports from -mock-addr.
	host, port, err := net.SplitHostPort(f.mockAddr)
	if err != nil {
		return fmt.Errorf("-mock-addr: %w", err)
	}
	first, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("-mock-addr: %w", err)
	}
	var mockURL string
	for i, kind := range []string{providermock.KindOpenAI, providermock.KindAnthropic, providermock.KindGemini, providermock.KindOllama} {
		mcfg := providermock.DefaultConfig()
		mcfg.Kind = kind
		if kind != providermock.KindOllama {
			mcfg.APIKey = "sk-dev-mock"
		}
		mock, err := providermock.New(mcfg)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(first+i))
		u, err := mock.Start(addr)
		if err != nil {
			return portHint(kind+" mock provider", addr, err)
		}
		defer mock.Close()
		if i == 0 {
			mockURL = u
		}
	}

	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	if err := n.Listen(); err != nil {
		return portHint("edge", cfg.Listen, err)
	}
	edge := "http://" + n.Addr().String()
	fmt.Fprintf(out, `
Meridian dev mesh is up.
  edge  %s   (node %s, region %s)
  mocks %s and the next three ports (OpenAI, Anthropic, Gemini and Ollama stand-ins)

Try it (the local model "tiny" answers once /readyz says it is loaded):

  curl -s %s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":26,"messages":[{"role":"user","content":"Hello, local model!"}]}'

  curl -s %s/readyz

  curl -s %s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Meridian!"}]}' -i

  curl -sN %s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream to me"}]}'

  curl -s %s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"resilient-chat","messages":[{"role":"user","content":"fail over"}]}' -D - -o /dev/null | grep -i x-meridian

  curl -s %s/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d '{"model":"gemini-flash","max_tokens":64,"messages":[{"role":"user","content":"Anthropic SDK, Gemini model"}]}'

  curl -s %s/v1/models
  curl -s %s/metrics | grep meridian_

Ctrl-C stops the mesh (in-flight streams are drained first).
`, edge, cfg.NodeID, cfg.Region, mockURL, edge, edge, edge, edge, edge, edge, edge, edge)
	return n.Run(ctx)
}

// writeTinyModels writes the tiny model to every placed model's GGUF
// path that does not exist yet: the dev mesh never downloads weights.
func writeTinyModels(models []engine.Model) error {
	for _, m := range models {
		if m.GGUF == "" {
			continue
		}
		if _, err := os.Stat(m.GGUF); err == nil {
			continue
		}
		var b bytes.Buffer
		if err := tinygguf.Write(&b, tinygguf.DefaultOptions()); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(m.GGUF), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(m.GGUF, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func portHint(what, addr string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%s: %s is already in use; stop whatever holds it or change the address (%w)", what, addr, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
