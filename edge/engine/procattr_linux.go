package engine

import (
	"os/exec"
	"syscall"
)

// groupGuard runs the command it is given ("$@") in the background and
// waits for it, as the leader of the process group that holds the server
// and its runners. The edge's death reaches it as SIGUSR2 (Pdeathsig),
// and it then SIGKILLs the whole group. A parent-death signal on the
// server alone would not do: the runners the server starts would outlive
// it. A stop (SIGTERM to the group) reaches the server directly; the
// guard ignores it, and exits with the server's status once it is gone.
const groupGuard = `trap 'kill -KILL 0' USR2
trap : TERM INT
"$@" &
pid=$!
while :; do
	wait "$pid"; st=$?
	kill -0 "$pid" 2>/dev/null || exit "$st"
done`

// serverCommand runs `ollama serve` under groupGuard, in a process group
// of its own, with a parent-death signal: an Ollama, server or runner,
// never outlives its edge, even one killed by SIGKILL. reapOrphans still
// covers a group whose guard was itself killed.
func serverCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", groupGuard, "meridian-ollama-guard", bin}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR2}
	return cmd
}
