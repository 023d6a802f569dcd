package engine

import "syscall"

// serverProcAttr runs `ollama serve` in a process group of its own, and
// has the kernel SIGKILL it the moment the edge dies (Pdeathsig), even by
// SIGKILL: an Ollama must never outlive its edge. Its runners exit when
// the server goes, and reapOrphans catches any that don't on the edge's
// next start.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
