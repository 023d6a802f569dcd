//go:build !linux

package engine

import (
	"os/exec"
	"syscall"
)

// serverCommand runs `ollama serve` in a process group of its own. This
// system has no parent-death signal: an Ollama left by a killed edge is
// reaped on the edge's next start (reapOrphans).
func serverCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}
