//go:build race

package gossip

// raceEnabled says the race detector is on: it slows every goroutine
// several times, and 30 nodes on fast timers on two cores then miss their
// own probe deadlines, so the failure-detection test shrinks the fleet.
const raceEnabled = true
