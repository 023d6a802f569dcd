// Package consoletest drives the control plane's web console (/ui) end
// to end in headless Chromium: a real control node with its NATS
// distribution and usage aggregation, two real edges following it and
// mock providers, all in this test process, and the Playwright script
// ops/console/e2e.mjs (playwright-core driving Debian's chromium) that
// logs in, reads the map, runs the decision explorer, creates and
// revokes a key, and takes the screenshots README shows.
//
// It holds tests only and must never be imported.
package consoletest
