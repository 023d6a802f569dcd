package main

import "syscall"

// childAttr puts a child in its own process group, so a terminal's ^C
// reaches only the benchmark, which then stops its children in order, and
// has the kernel kill the child if the benchmark dies without cleaning up.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
