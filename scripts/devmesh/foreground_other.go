//go:build !linux

package main

// foreground does nothing here: Ctrl-C reaches make too.
func foreground() (restore func()) { return func() {} }
