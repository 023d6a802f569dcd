package link

import (
	"sync"
	"time"
)

// replayWindow remembers request IDs for between one and two windows, in
// two generations: IDs go into the current one, and when a window has
// passed the previous generation is dropped. Lookups and inserts are
// O(1) and memory is bounded by the request rate over two windows.
// Headers older than one window are refused as stale before they get
// here, so an ID that has been forgotten can no longer be replayed.
type replayWindow struct {
	mu      sync.Mutex
	window  time.Duration
	rotated time.Time
	cur     map[string]struct{}
	prev    map[string]struct{}
}

func newReplayWindow(window time.Duration) *replayWindow {
	return &replayWindow{window: window, cur: map[string]struct{}{}, prev: map[string]struct{}{}}
}

// firstSeen records id and reports whether it was new.
func (w *replayWindow) firstSeen(id []byte, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rotated.IsZero() {
		w.rotated = now
	}
	if d := now.Sub(w.rotated); d >= w.window {
		if d >= 2*w.window {
			clear(w.prev)
		} else {
			w.prev = w.cur
		}
		w.cur = make(map[string]struct{}, len(w.prev))
		w.rotated = now
	}
	if _, ok := w.cur[string(id)]; ok {
		return false
	}
	if _, ok := w.prev[string(id)]; ok {
		return false
	}
	w.cur[string(id)] = struct{}{}
	return true
}
