package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// noEnv is an empty environment: only the flags count.
func noEnv(string) string { return "" }

// postgresEnv is an environment that points dkimd at the Postgres database
// url, with the KEK file kek if not empty.
func postgresEnv(url string, kek string) func(string) string {
	return func(k string) string {
		switch k {
		case "DKIMD_DATABASE_URL":
			return url
		case "DKIMD_MASTER_KEY_FILE":
			return kek
		}
		return ""
	}
}

// writeKEK writes a new KEK file into dir, as an operator does for a
// Postgres deployment, and returns its path.
func writeKEK(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "kek")
	if _, err := sealbox.Generate(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// prepareDataDir gives an embedded store's data dir what the first serve
// makes there, a KEK and a migrated database, unless it has them.
func prepareDataDir(t *testing.T, dataDir string) {
	t.Helper()
	kek := sealbox.DefaultPath(dataDir)
	if _, err := os.Stat(kek); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := sealbox.Generate(kek); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, keystore.SQLiteFileName)); errors.Is(err, fs.ErrNotExist) {
		if err := run(context.Background(), []string{"migrate", "--data-dir", dataDir}, noEnv, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
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
