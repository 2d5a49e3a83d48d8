package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the file in an embedded store's data dir that the running
// serve holds an exclusive flock on, with its PID inside.
const lockFileName = "serve.lock"

// serveLock is the one-serve-per-data-dir lock of the embedded store: two
// serves on one SQLite file would both run rotation as its only leader
// (docs/operator-guide.md, "Brands and maildomains"). The kernel drops the lock when the process
// ends, however it ends, so a crash leaves nothing to clean up; the PID in
// the file only names the holder in the error. Subcommands do not take it:
// they work beside a running serve.
type serveLock struct{ f *os.File }

// lockDataDir takes the serve lock of dir, which must exist.
func lockDataDir(dir string) (*serveLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fail(err, "cannot open the serve lock %s: is the data dir writable?", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = "PID " + strconv.Itoa(pid)
				}
			}
			return nil, fail(err, "another dkimd serve (%s) already runs on the embedded store in %s: one serve per data dir; several replicas need Postgres (--database-url)", holder, dir)
		}
		return nil, fail(err, "cannot lock %s", path)
	}
	// Exactly 0600 whatever the umask, as every file in the data dir
	// (docs/operator-guide.md, "Data dir").
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fail(err, "cannot chmod the serve lock %s", path)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fail(err, "cannot write the serve lock %s", path)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fail(err, "cannot write the serve lock %s", path)
	}
	return &serveLock{f: f}, nil
}

// release empties the PID and drops the lock.
func (l *serveLock) release() error {
	if l == nil {
		return nil
	}
	_ = l.f.Truncate(0) // a stale PID only appears in a message; the flock is what counts
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("serve lock: %w", err)
	}
	return nil
}
