package main

import (
	"context"
	"io"
	"testing"
	"time"
)

// noEnv is an empty environment: only the flags count.
func noEnv(string) string { return "" }

// postgresEnv is an environment that points dkimd at the Postgres database url.
func postgresEnv(url string) func(string) string {
	return func(k string) string {
		if k == "DKIMD_DATABASE_URL" {
			return url
		}
		return ""
	}
}

// serveProcess is a `dkimd serve` running in the test's process.
type serveProcess struct {
	done chan struct{}
	err  error // set before done closes
}

// ended reports, without waiting, whether serve has returned, and its error.
func (p *serveProcess) ended() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// runServe runs `dkimd <args>` (args starting with "serve") until the test
// ends; the cleanup stops it as SIGTERM would and fails the test if it does
// not stop within 30 s or stops with an error.
func runServe(t *testing.T, args []string, env func(string) string, stderr io.Writer) *serveProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &serveProcess{done: make(chan struct{})}
	go func() {
		p.err = run(ctx, args, env, io.Discard, stderr)
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
			if p.err != nil {
				t.Errorf("serve: %v", p.err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	return p
}
