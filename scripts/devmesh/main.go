// Command devmesh brings up a whole Meridian mesh on this machine for
// trying it out, from the real binaries (`make run` builds them first):
//
//   - mock OpenAI, Anthropic, Gemini and Ollama providers, in process;
//   - a control node (meridian-control), with the fleet in fleet.yaml
//     applied through meridianctl;
//   - dev-edge-1, running the project's tiny model on its own Ollama
//     (`make ollama`);
//   - dev-edge-2, which forwards the tiny model to dev-edge-1 over a QUIC
//     link; the two edges gossip.
//
// It writes what the mesh needs (the tiny model, a development CA and the
// edges' certificates) under .meridian/devmesh, prints requests ready to
// paste, and runs until interrupted, then stops every process it started.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/providermock"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

type flags struct {
	bin      string
	dir      string
	mockAddr string
}

// The control node's addresses and the development admin token.
const (
	controlAPI   = "127.0.0.1:7400"
	controlRaft  = "127.0.0.1:7401"
	adminToken   = "devmesh-admin-token-not-secret"
	mockKey      = "sk-dev-mock"
	readyTimeout = 3 * time.Minute
)

var edges = []struct{ id, config, addr string }{
	{"dev-edge-1", "scripts/devmesh/edge-1.yaml", "127.0.0.1:8080"},
	{"dev-edge-2", "scripts/devmesh/edge-2.yaml", "127.0.0.1:8081"},
}

func main() {
	var f flags
	flag.StringVar(&f.bin, "bin", "bin", "folder holding meridian-edge, meridian-control, meridianctl and ollama (make build ollama)")
	flag.StringVar(&f.dir, "dir", ".meridian/devmesh", "folder for the mesh's state: model, certificates, Raft data, Ollama models")
	flag.StringVar(&f.mockAddr, "mock-addr", "127.0.0.1:9100", "address of the OpenAI mock; the Anthropic, Gemini and Ollama mocks take the next three ports (the edges' base URLs must match)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devmesh:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, out io.Writer) error {
	for _, b := range []string{"meridian-edge", "meridian-control", "meridianctl", "ollama"} {
		if _, err := os.Stat(filepath.Join(f.bin, b)); err != nil {
			return fmt.Errorf("%s: %w (make build ollama builds it; make run does both)", filepath.Join(f.bin, b), err)
		}
	}
	if err := prepare(f.dir); err != nil {
		return err
	}

	// One mock per wire format, on consecutive ports from -mock-addr.
	host, port, err := net.SplitHostPort(f.mockAddr)
	if err != nil {
		return fmt.Errorf("-mock-addr: %w", err)
	}
	first, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("-mock-addr: %w", err)
	}
	for i, kind := range []string{providermock.KindOpenAI, providermock.KindAnthropic, providermock.KindGemini, providermock.KindOllama} {
		mcfg := providermock.DefaultConfig()
		mcfg.Kind = kind
		if kind != providermock.KindOllama {
			mcfg.APIKey = mockKey
		}
		mock, err := providermock.New(mcfg)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(first+i))
		if _, err := mock.Start(addr); err != nil {
			return portHint(kind+" mock provider", addr, err)
		}
		defer mock.Close()
	}

	var procs procGroup
	defer procs.stop()
	env := append(os.Environ(), "MERIDIAN_SECRET_DEV_MOCK_KEY="+mockKey,
		"MERIDIAN_CONTROL_ADDR=http://"+controlAPI, "MERIDIAN_CONTROL_TOKEN="+adminToken)

	// The control plane: one node, bootstrapped on first start; its Raft
	// data survives restarts of the mesh.
	if err := procs.start("control", env, filepath.Join(f.bin, "meridian-control"),
		"-data-dir", filepath.Join(f.dir, "control"), "-node-name", "dev-control-1", "-bootstrap",
		"-http-addr", controlAPI, "-raft-addr", controlRaft, "-admin-tokens", adminToken, "-log-level", "warn"); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+controlAPI+"/v1/control/health", &procs); err != nil {
		return fmt.Errorf("control node: %w", err)
	}
	apply := exec.CommandContext(ctx, filepath.Join(f.bin, "meridianctl"), "apply", "-f", "scripts/devmesh/fleet.yaml")
	apply.Env, apply.Stdout, apply.Stderr = env, prefixed("control", out), prefixed("control", out)
	if err := apply.Run(); err != nil {
		return fmt.Errorf("meridianctl apply: %w", err)
	}

	for _, e := range edges {
		if err := procs.start(e.id, env, filepath.Join(f.bin, "meridian-edge"), "-config", e.config, "-log-level", "warn"); err != nil {
			return err
		}
	}
	for _, e := range edges {
		if err := waitHTTP(ctx, "http://"+e.addr+"/readyz", &procs); err != nil {
			return fmt.Errorf("%s: %w", e.id, err)
		}
	}

	fmt.Fprintf(out, `
Meridian dev mesh is up.
  control     http://%[1]s   (meridianctl: export MERIDIAN_CONTROL_ADDR=http://%[1]s MERIDIAN_CONTROL_TOKEN=%[2]s)
  dev-edge-1  http://%[3]s   tiny model on its own Ollama, mock providers
  dev-edge-2  http://%[4]s   forwards "tiny" to dev-edge-1 over QUIC
  mocks       %[5]s and the next three ports (OpenAI, Anthropic, Gemini and Ollama stand-ins)

Try it:

  curl -s http://%[3]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":26,"messages":[{"role":"user","content":"Hello, local model!"}]}'

  curl -s http://%[4]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":26,"messages":[{"role":"user","content":"Over the link"}]}' -D - | grep -i x-meridian-route

  curl -sN http://%[3]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream to me"}]}'

  curl -s http://%[3]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"resilient-chat","messages":[{"role":"user","content":"fail over"}]}' -D - -o /dev/null | grep -i x-meridian

  curl -s http://%[3]s/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d '{"model":"gemini-flash","max_tokens":64,"messages":[{"role":"user","content":"Anthropic SDK, Gemini model"}]}'

  curl -s http://%[4]s/v1/meridian/members
  curl -s http://%[4]s/v1/meridian/links
  curl -s http://%[3]s/readyz
  bin/meridianctl status
  bin/meridianctl model ls

Ctrl-C stops the mesh (in-flight streams are drained first).
`, controlAPI, adminToken, edges[0].addr, edges[1].addr, f.mockAddr)

	select {
	case <-ctx.Done():
	case name := <-procs.exited:
		return fmt.Errorf("%s exited; stopping the mesh", name)
	}
	return nil
}

// prepare writes the tiny model and the development certificates, unless
// an earlier run left them.
func prepare(dir string) error {
	tls := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tls, 0o700); err != nil {
		return err
	}
	model := filepath.Join(dir, "tiny.gguf")
	if _, err := os.Stat(model); err != nil {
		var b bytes.Buffer
		if err := tinygguf.Write(&b, tinygguf.DefaultOptions()); err != nil {
			return err
		}
		if err := os.WriteFile(model, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(tls, pki.CACertFile)); err != nil {
		if err := pki.WriteCA(tls, "Meridian devmesh CA", 365*24*time.Hour); err != nil {
			return err
		}
	}
	for _, e := range edges {
		if _, err := os.Stat(filepath.Join(tls, e.id+".crt")); err == nil {
			continue
		}
		if err := pki.WriteNodeCert(tls, tls, e.id, []string{"127.0.0.1", "localhost"}, 365*24*time.Hour); err != nil {
			return err
		}
	}
	return nil
}

// procGroup is the processes the mesh runs, each in a process group of
// its own so that stop reaches what they start (an edge's Ollama stops
// with its edge).
type procGroup struct {
	mu     sync.Mutex
	cmds   []*exec.Cmd
	exited chan string
	wg     sync.WaitGroup
}

func (g *procGroup) start(name string, env []string, bin string, args ...string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exited == nil {
		g.exited = make(chan string, 8)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = prefixed(name, os.Stderr), prefixed(name, os.Stderr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	g.cmds = append(g.cmds, cmd)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		cmd.Wait()
		g.exited <- name
	}()
	return nil
}

// stop asks every process to drain and stop, newest first, and waits.
func (g *procGroup) stop() {
	g.mu.Lock()
	cmds := g.cmds
	g.mu.Unlock()
	for i := len(cmds) - 1; i >= 0; i-- {
		cmds[i].Process.Signal(syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		for _, c := range cmds {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
		<-done
	}
}

// waitHTTP polls url until it answers 200, a process exits or ctx ends.
func waitHTTP(ctx context.Context, url string, g *procGroup) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %v", url, readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-g.exited:
			return fmt.Errorf("%s exited while starting", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// prefixed writes each line to w with the process name in front.
func prefixed(name string, w io.Writer) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(w, "%-11s %s\n", "["+name+"]", sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	return pw
}

func portHint(what, addr string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%s: %s is already in use; stop whatever holds it or change the address (%w)", what, addr, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
