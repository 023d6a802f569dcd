// Package testkit is Meridian's test support: the stand-ins and tools
// that tests, benchmarks and the dev mesh share, one folder per tool
// (relay: a userspace WAN emulator; tinygguf: the tiny generated model).
// It sits in shared/ so that tests of every layer may import it; no
// production package may (edge/cmd/meridian-edge's deps test forbids it
// in the edge binary).
package testkit
