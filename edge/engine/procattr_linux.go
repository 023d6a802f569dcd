package engine

import (
	"os/exec"
	"syscall"
)

// serverProcAttr runs `ollama serve` in a process group of its own, and
// has the kernel SIGKILL it the moment the edge dies (Pdeathsig), even by
// SIGKILL.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// groupGuard waits in Ollama's process group for the edge's death, which
// reaches it as SIGUSR2 (Pdeathsig), and then SIGKILLs the whole group.
// The server's own parent-death signal does not reach the runners it
// starts, which would outlive a SIGKILLed edge (seen with Ollama 0.17.4).
// A stop or a crash of the server takes the guard with the group.
const groupGuard = `trap 'kill -KILL 0' USR2
while :; do sleep 3600 & wait $!; done`

// guardGroup starts the guard of process group pgid.
func guardGroup(pgid int) error {
	cmd := exec.Command("/bin/sh", "-c", groupGuard)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid, Pdeathsig: syscall.SIGUSR2}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait() // reaped when the group goes
	return nil
}
