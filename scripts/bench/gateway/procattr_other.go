//go:build !linux

package main

import "syscall"

// childAttr uses the defaults where Linux's parent-death signal is missing.
func childAttr() *syscall.SysProcAttr { return nil }
