package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The modes of the data dir and of everything in it, whatever the umask
// (docs/operator-guide.md, "Data dir"): it holds the database with every
// brand's sealed private keys, the key-encryption key and the operator
// token, none of which another local user may read.
const (
	DataDirMode  fs.FileMode = 0o700
	DataFileMode fs.FileMode = 0o600
)

// ModeFix is one file or directory whose mode opening the store tightened.
type ModeFix struct {
	Path     string
	Old, New fs.FileMode
}

// secureDataDir creates dir with DataDirMode when create is set, then sets
// dir to DataDirMode and every regular file directly in it to DataFileMode,
// returning what it changed. It goes no deeper and leaves symbolic links
// alone: an operator who points --data-dir at a directory with other things
// in it must not find their whole tree changed.
func secureDataDir(dir string, create bool) ([]ModeFix, error) {
	if create {
		if err := os.MkdirAll(dir, DataDirMode); err != nil {
			return nil, fmt.Errorf("keystore: data dir: %w", err)
		}
	}
	fi, err := os.Stat(dir)
	if !create && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: data dir: %w", err)
	}
	var fixes []ModeFix
	fix := func(path string, have, want fs.FileMode) error {
		if have.Perm() == want {
			return nil
		}
		if err := os.Chmod(path, want); err != nil {
			return fmt.Errorf("keystore: data dir modes: %w", err)
		}
		fixes = append(fixes, ModeFix{Path: path, Old: have.Perm(), New: want})
		return nil
	}
	if err := fix(dir, fi.Mode(), DataDirMode); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fixes, fmt.Errorf("keystore: data dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile (a write check's file)
		}
		if err != nil {
			return fixes, fmt.Errorf("keystore: data dir: %w", err)
		}
		if err := fix(filepath.Join(dir, e.Name()), info.Mode(), DataFileMode); err != nil {
			return fixes, err
		}
	}
	return fixes, nil
}

// createPrivate makes an empty file with DataFileMode if none exists, so
// that SQLite, which gives its -wal and -shm files the database file's mode
// (and would create the database 0644), keeps every file private.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, DataFileMode)
	if err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	// The umask may have taken bits from the mode OpenFile asked for.
	err = f.Chmod(DataFileMode)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	return nil
}

// logModeFixes says in the log what opening the store tightened, once a
// logger is set (SetLog).
func (s *SQL) logModeFixes() {
	for _, f := range s.modeFixes {
		s.log.Warn("tightened the mode of a data dir entry that its group or others could reach",
			slog.String("path", f.Path), slog.String("old_mode", fmt.Sprintf("%#o", f.Old)),
			slog.String("new_mode", fmt.Sprintf("%#o", f.New)))
	}
	s.modeFixes = nil
}
