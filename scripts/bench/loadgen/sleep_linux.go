package loadgen

import (
	"context"
	"runtime"
	"syscall"
	"time"
)

// prctl(2) options for the calling thread's timer slack, in nanoseconds.
const (
	prSetTimerSlack = 29
	prGetTimerSlack = 30
)

// schedulerSlack is the timer slack of the thread that paces an open
// loop: how late the kernel may wake a sleep to batch wake-ups.
const schedulerSlack = 1000 // 1µs

// pinScheduler locks the calling goroutine to its thread and lowers the
// thread's timer slack from the default 50µs, halving how late paced
// requests start. The returned func restores both. It must be called,
// rather than letting the goroutine exit locked: an exiting locked thread
// is destroyed, and a thread that started a child with a parent-death
// signal would take the child down with it.
func pinScheduler() (restore func()) {
	runtime.LockOSThread()
	old, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 {
		return runtime.UnlockOSThread
	}
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, schedulerSlack, 0)
	return func() {
		syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, old, 0)
		runtime.UnlockOSThread()
	}
}

// sleepUntil waits until t or until ctx ends. The runtime's timers wake up
// to a millisecond late on Linux, as much as a whole request interval at
// 1,000 req/s, so it sleeps with nanosleep(2) instead, which wakes within
// the thread's timer slack. It blocks an OS thread, not a P: the runtime
// hands the P to another thread while it sleeps.
func sleepUntil(ctx context.Context, t time.Time) error {
	const slice = 50 * time.Millisecond // how often a long sleep checks ctx
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		ts := syscall.NsecToTimespec(int64(min(d, slice)))
		syscall.Nanosleep(&ts, nil) // EINTR just loops
	}
}
