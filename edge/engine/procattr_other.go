//go:build !linux

package engine

import "syscall"

// serverProcAttr runs `ollama serve` in a process group of its own. This
// system has no parent-death signal: an Ollama left by a killed edge is
// reaped on the edge's next start (reapOrphans).
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// guardGroup does nothing here; see serverProcAttr.
func guardGroup(pgid int) error { return nil }
