package wait

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeTB struct{ msg string }

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestForReturnsOnceTrue(t *testing.T) {
	n := 0
	var f fakeTB
	For(&f, time.Second, "three polls", func() bool { n++; return n == 3 })
	if f.msg != "" || n != 3 {
		t.Fatalf("polls=%d failure=%q", n, f.msg)
	}
}

func TestForFailsWithWhatAndLastError(t *testing.T) {
	var f fakeTB
	For(&f, 30*time.Millisecond, "the stragglers", func() error { return errors.New("node-7 missing") })
	if !strings.Contains(f.msg, "the stragglers") || !strings.Contains(f.msg, "node-7 missing") {
		t.Fatalf("failure = %q", f.msg)
	}
	var g fakeTB
	For(&g, 30*time.Millisecond, "never", func() bool { return false })
	if !strings.Contains(g.msg, "waiting for never") || strings.Contains(g.msg, "not yet") {
		t.Fatalf("failure = %q", g.msg)
	}
}
