package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/ports"
)

// stopGrace is how long a child gets to exit after SIGTERM before it is
// killed.
const stopGrace = 3 * time.Second

// pollEvery is the readiness poll interval.
const pollEvery = 10 * time.Millisecond

// binaries are the paths of the built programs.
type binaries struct {
	edge, mock, proxy string
}

// build compiles the programs into dir from the module that holds the
// working directory. A non-empty edgeBin is used instead of building the
// edge.
func build(ctx context.Context, dir, edgeBin string) (binaries, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return binaries{}, errors.New("run from inside the meridian module")
	}
	pkgs := []string{"./scripts/mockprovider", "./scripts/bench/minproxy"}
	if edgeBin == "" {
		pkgs = append(pkgs, "./edge/cmd/meridian-edge")
		edgeBin = filepath.Join(dir, "meridian-edge")
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	if _, err := os.Stat(edgeBin); err != nil {
		return binaries{}, fmt.Errorf("edge binary: %w", err)
	}
	return binaries{edge: edgeBin, mock: filepath.Join(dir, "mockprovider"), proxy: filepath.Join(dir, "minproxy")}, nil
}

// child is one started process.
type child struct {
	name   string
	url    string // base URL it serves, such as http://127.0.0.1:41234
	cmd    *exec.Cmd
	stderr *tail
	exited chan struct{} // closed once Wait returns
	err    error         // Wait's result, set before exited closes
}

func (c *child) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// exitError describes how the child ended, with its last stderr output.
func (c *child) exitError() error {
	return fmt.Errorf("%s exited early (%v); stderr:\n%s", c.name, c.err, c.stderr.String())
}

// fleet starts children and stops every one it started.
type fleet struct {
	log      io.Writer
	timeout  time.Duration // for each child to become ready
	mu       sync.Mutex
	children []*child
}

// start launches bin with args, its stdout going to stdout (nil: discarded).
func (f *fleet) start(name, bin string, stdout io.Writer, args ...string) (*child, error) {
	c := &child{name: name, stderr: &tail{max: 8 << 10}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout = stdout
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = childAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.mu.Lock()
	f.children = append(f.children, c)
	f.mu.Unlock()
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// startAnnounced starts a child that prints prefix followed by its base URL
// on stdout once it accepts connections, and waits for that line.
func (f *fleet) startAnnounced(ctx context.Context, name, bin, prefix string, args ...string) (*child, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c, err := f.start(name, bin, pw, args...)
	pw.Close() // the child holds its own copy
	if err != nil {
		pr.Close()
		return nil, err
	}
	urls := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				u, _, _ := strings.Cut(rest, " ")
				select {
				case urls <- u:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr) // past an overlong line; never block the child
	}()
	timer := time.NewTimer(f.timeout)
	defer timer.Stop()
	select {
	case c.url = <-urls:
	case <-c.exited:
		return nil, c.exitError()
	case <-timer.C:
		return nil, fmt.Errorf("%s did not announce its address within %v", name, f.timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if !strings.HasPrefix(c.url, "http://127.0.0.1:") {
		return nil, fmt.Errorf("%s announced %q, want a loopback http URL", name, c.url)
	}
	fmt.Fprintf(f.log, "gateway: %s ready at %s (pid %d)\n", name, c.url, c.cmd.Process.Pid)
	return c, nil
}

// edgeConfig is the edge's config: one openai provider at the mock.
const edgeConfig = `node_id: bench-edge
listen: 127.0.0.1:0
log_level: warn
providers:
  - id: mock
    kind: openai
    base_url: %s/v1
models:
  - id: gpt-4o-mini
routes:
  - model: gpt-4o-mini
    targets: [{provider: mock}]
`

// startEdge starts the edge on a free loopback port and waits until
// /readyz answers 200. The edge does not print its address, so the port
// is picked here; if another process takes it first, it retries.
func (f *fleet) startEdge(ctx context.Context, bin, dir, mockURL string) (*child, error) {
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, edgeConfig, mockURL), 0o600); err != nil {
		return nil, err
	}
	var err error
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var c *child
		if c, err = f.start("edge", bin, nil, "-config", path, "-listen", addr, "-log-level", "warn"); err != nil {
			return nil, err
		}
		c.url = "http://" + addr
		if err = f.waitReady(ctx, c, c.url+"/readyz"); err == nil {
			fmt.Fprintf(f.log, "gateway: edge ready at %s (pid %d)\n", c.url, c.cmd.Process.Pid)
			return c, nil
		}
		if c.running() || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

// waitReady polls url until it answers 200, the child exits or the
// timeout passes.
func (f *fleet) waitReady(ctx context.Context, c *child, url string) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(f.timeout)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %v: %w; stderr:\n%s", c.name, f.timeout, err, c.stderr.String())
		}
		select {
		case <-c.exited:
			return c.exitError()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// stopAll stops every child, newest first: SIGTERM, then SIGKILL after
// stopGrace. It is safe to call more than once.
func (f *fleet) stopAll() {
	f.mu.Lock()
	cs := f.children
	f.children = nil
	f.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		if !c.running() {
			continue
		}
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(stopGrace):
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

// freePort returns a loopback port below the ephemeral range that is
// free now.
func freePort() (int, error) { return ports.Pick() }

// memory reads a process's resident set size and its peak, in kB, from
// /proc/PID/status.
func memory(pid int) (rssKB, hwmKB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			rssKB = n
		} else {
			hwmKB = n
		}
	}
	if rssKB == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rssKB, hwmKB, nil
}

// tail keeps the last max bytes written to it: a child's stderr, for
// error messages.
type tail struct {
	max int
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
