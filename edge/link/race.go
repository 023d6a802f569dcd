//go:build race

package link

// raceDetector is true in builds with the race detector; see
// awaitHandshakeUnderRace.
const raceDetector = true
