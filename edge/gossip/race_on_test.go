//go:build race

package gossip

// raceEnabled says the race detector is on: it slows every goroutine
// several times, and 30 nodes on fast timers on two cores then miss their
// own probe deadlines. The failure-detection test shrinks the fleet and
// the dissemination test widens its bound; the benchmark, which runs
// without the detector, holds the targets.
const raceEnabled = true
