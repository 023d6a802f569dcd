package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// foreground makes devmesh the terminal's foreground process group, so
// that Ctrl-C reaches devmesh alone: make and go run, which would die of
// it and report an error, never see it, and devmesh's orderly stop is
// what ends the run (exit 0). It returns the function that gives the
// terminal back. Without a terminal it does nothing.
func foreground() (restore func()) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return func() {}
	}
	fd := int(tty.Fd())
	prev, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || syscall.Setpgid(0, 0) != nil {
		tty.Close()
		return func() {}
	}
	// A background group that changes the foreground gets SIGTTOU.
	signal.Ignore(syscall.SIGTTOU)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, syscall.Getpgrp()); err != nil {
		tty.Close()
		return func() {}
	}
	return func() {
		unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, prev)
		tty.Close()
	}
}
