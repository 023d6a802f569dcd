package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one run of `ollama serve`: a child in a process group of its
// own, so the model runners it starts (grandchildren of the edge) are
// signalled with it and never outlive it.
type process struct {
	cmd    *exec.Cmd
	pgid   int
	pid    string        // the file recording pgid, for reapOrphans
	url    string        // set once the server listens
	exited chan struct{} // closed when the server exits
	err    error         // the exit status, valid after exited closes
}

// listening matches Ollama's start-up line, for example
// `msg="Listening on 127.0.0.1:40123 (version 0.17.4)"`.
var listening = regexp.MustCompile(`Listening on (\S+:\d+)`)

// pidFile records the process group of the running Ollama, so an edge
// that was killed without cleaning up reaps its orphans on next start.
const pidFile = "ollama.pgid"

// start starts `ollama serve` and waits until it listens or fails.
func start(ctx context.Context, cfg *Config, log *slog.Logger) (*process, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	home, models := filepath.Join(dataDir, "home"), filepath.Join(dataDir, "models")
	for _, d := range []string{home, models} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("local engine: %w", err)
		}
	}
	reapOrphans(dataDir, log)

	// The server and its runners share one process group that stop
	// signals as a whole; on Linux the group also dies with the edge
	// (procattr_linux.go).
	cmd := exec.Command(cfg.Binary, "serve")
	cmd.Env = childEnv(os.Environ(), cfg, home, models)
	cmd.Dir = dataDir
	cmd.SysProcAttr = serverProcAttr()
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr // both into the one pipe
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local engine: start %s: %w", cfg.Binary, err)
	}
	p := &process{cmd: cmd, pgid: cmd.Process.Pid, pid: filepath.Join(dataDir, pidFile), exited: make(chan struct{})}
	os.WriteFile(p.pid, []byte(strconv.Itoa(p.pgid)), 0o600)
	if err := guardGroup(p.pgid); err != nil {
		log.Warn("local engine: no guard for ollama's runners; a killed edge may leave them until its next start", "err", err)
	}

	addr := make(chan string, 1)
	var logs sync.WaitGroup
	logs.Add(1)
	go func() {
		defer logs.Done()
		relayLogs(out, log, addr)
	}()
	go func() {
		logs.Wait() // Wait closes the pipe; read it to the end first
		p.err = cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case a := <-addr:
		p.url = "http://" + a
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("local engine: ollama exited before listening: %v", p.err)
	case <-timer.C:
		p.stop(time.Second)
		return nil, fmt.Errorf("local engine: ollama did not listen within %v", cfg.StartTimeout)
	case <-ctx.Done():
		p.stop(time.Second)
		return nil, ctx.Err()
	}
}

// childEnv is the edge's environment without any OLLAMA_ setting of the
// operator's shell, plus the supervised server's own.
func childEnv(parent []string, cfg *Config, home, models string) []string {
	env := make([]string, 0, len(parent)+8)
	for _, kv := range parent {
		if strings.HasPrefix(kv, "OLLAMA_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	keep := "-1"
	if cfg.KeepAlive > 0 {
		keep = cfg.KeepAlive.String()
	}
	return append(env,
		"HOME="+home,            // Ollama writes $HOME/.ollama/id_ed25519
		"OLLAMA_MODELS="+models, // never shared with another server
		"OLLAMA_HOST=127.0.0.1:0",
		"OLLAMA_NUM_PARALLEL="+strconv.Itoa(cfg.NumParallel),
		"OLLAMA_KEEP_ALIVE="+keep,
		"OLLAMA_NOPRUNE=1", // a blob uploaded for a create in progress must survive a restart
		"GGML_NO_BACKTRACE=1",
	)
}

// relayLogs copies Ollama's log lines into the edge's log and reports
// the listen address once it appears.
func relayLogs(r io.Reader, log *slog.Logger, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !found {
			if m := listening.FindStringSubmatch(line); m != nil {
				found = true
				addr <- m[1]
			}
		}
		level := slog.LevelDebug
		switch {
		case strings.Contains(line, "level=ERROR"), strings.Contains(line, "panic"):
			level = slog.LevelError
		case strings.Contains(line, "level=WARN"):
			level = slog.LevelWarn
		case strings.Contains(line, "level=INFO"):
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "ollama", "line", line)
	}
	io.Copy(io.Discard, r)
}

// stop asks the server's group to end, then kills what is left after
// grace. It returns once the server has exited.
func (p *process) stop(grace time.Duration) {
	syscall.Kill(-p.pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
	}
	// Runners may outlive a server that ended on its own; the group
	// kill takes them too.
	syscall.Kill(-p.pgid, syscall.SIGKILL)
	<-p.exited
	os.Remove(p.pid) // nothing left to reap
}

// reapOrphans kills the process group a previous run of this edge left
// behind, if its leader was an ollama that still runs.
func reapOrphans(dataDir string, log *slog.Logger) {
	b, err := os.ReadFile(filepath.Join(dataDir, pidFile))
	if err != nil {
		return
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 {
		return
	}
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return
	}
	// A recycled PID could name someone else's group: only reap a group
	// whose members run an ollama binary.
	if !groupRunsOllama(pgid) {
		return
	}
	log.Warn("local engine: killing ollama processes left by an earlier run", "pgid", pgid)
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// groupRunsOllama reports whether a process in group pgid runs a binary
// named ollama, reading /proc.
func groupRunsOllama(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && strings.HasPrefix(filepath.Base(exe), "ollama") {
			return true
		}
	}
	return false
}
