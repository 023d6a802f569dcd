//go:build race

package link

// raceDetector is true in builds with the race detector; see
// awaitHandshakeUnderRace. Those builds never send a request in 0-RTT,
// so `make test` runs the 0-RTT tests (ZERO_RTT in the Makefile) once
// more without -race.
const raceDetector = true
