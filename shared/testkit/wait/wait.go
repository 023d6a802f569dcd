// Package wait is the test kit's one way to wait for a condition: poll
// it until it holds or a deadline passes, then fail the test saying what
// was awaited. Tests poll rather than sleep, so they are as fast as the
// system allows and as patient as a loaded CI machine needs.
package wait

import (
	"time"
)

// TB is the part of testing.TB that For needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Interval is how often a condition is polled.
const Interval = 10 * time.Millisecond

// For polls cond until it holds (true, or a nil error) or timeout passes,
// and then fails t with what and, for an error condition, its last
// error, which can say what is still missing.
func For[C func() bool | func() error](t TB, timeout time.Duration, what string, cond C) {
	t.Helper()
	check := func() error {
		switch c := any(cond).(type) {
		case func() bool:
			if !c() {
				return errNotYet
			}
		case func() error:
			return c()
		}
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			} else {
				t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			}
			return
		}
		time.Sleep(Interval)
	}
}

var errNotYet = notYet{}

type notYet struct{}

func (notYet) Error() string { return "not yet" }
