// Package wanterr is the test kit's one check of an error against what a
// table test expects: none, or one whose message says something. Tests
// of Validate methods and parsers share it. Production code never
// imports it.
package wanterr

import "strings"

// TB is the part of testing.TB that Contains needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Contains fails t unless err is nil and want is "", or err's message
// contains want.
func Contains(t TB, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("error %v, want none", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}
