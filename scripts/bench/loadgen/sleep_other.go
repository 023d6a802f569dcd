//go:build !linux

package loadgen

import (
	"context"
	"time"
)

// pinScheduler does nothing where thread timer slack cannot be set.
func pinScheduler() (restore func()) { return func() {} }

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
