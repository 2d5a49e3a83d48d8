//go:build !linux

package main

import "log/slog"

// raiseFileLimit is Linux's (rlimit_linux.go); elsewhere the limit stays as
// the process was started with.
func raiseFileLimit(*slog.Logger) {}
