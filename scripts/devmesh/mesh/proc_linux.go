package mesh

import "syscall"

// sysProcAttr puts a child in a process group of its own (Ctrl-C at the
// terminal reaches only the launcher, which stops the mesh in order) and
// kills it should the launcher die.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
