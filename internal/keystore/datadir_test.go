package keystore_test

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/logtest"
	"dkimd/internal/sealbox"
)

// withUmask runs f under umask u. The umask is the process's: this test is
// not parallel, and parallel tests of the package start only after it.
func withUmask(t *testing.T, u int, f func()) {
	t.Helper()
	old := syscall.Umask(u)
	defer syscall.Umask(old)
	f()
}

// modes is the permission bits of dir and of every entry directly in it.
func modes(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	out["."] = fi.Mode().Perm()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Mode().Perm()
	}
	return out
}

func TestDataDirIsPrivateWhateverTheUmask(t *testing.T) {
	for _, u := range []int{0, 0o022} {
		t.Run(fmt.Sprintf("umask %04o", u), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			withUmask(t, u, func() {
				s, err := keystore.OpenSQLite(dir)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				if _, err := s.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
				if err := s.WriteProbe(ctx); err != nil { // a write: the -wal and -shm files exist now
					t.Fatal(err)
				}
				if _, _, _, err := sealbox.LoadOrCreate(dir); err != nil {
					t.Fatal(err)
				}
				got := modes(t, dir)
				for _, name := range []string{keystore.SQLiteFileName, keystore.SQLiteFileName + "-wal", keystore.SQLiteFileName + "-shm", sealbox.KeyFileName} {
					if _, ok := got[name]; !ok {
						t.Errorf("%s was not created (have %v)", name, got)
					}
				}
				for name, m := range got {
					want := keystore.DataFileMode
					if name == "." {
						want = keystore.DataDirMode
					}
					if m != want {
						t.Errorf("%s: mode %#o, want %#o", name, m, want)
					}
				}
			})
		})
	}
}

func TestOpenTightensExistingModesAndSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	withUmask(t, 0, func() {
		s, err := keystore.OpenSQLite(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.Close()
		// As an older dkimd, or a restore from a backup, left them.
		for name, mode := range map[string]fs.FileMode{
			".": 0o755, keystore.SQLiteFileName: 0o644, "operator.token": 0o644, "serve.lock": 0o664,
		} {
			p := filepath.Join(dir, name)
			if name != "." && name != keystore.SQLiteFileName {
				if err := os.WriteFile(p, []byte("x\n"), mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(dir, "not-ours"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logs := &logtest.Buffer{}
	s.SetLog(slog.New(slog.NewJSONHandler(logs, nil)))

	got := modes(t, dir)
	for name, want := range map[string]fs.FileMode{
		".": 0o700, keystore.SQLiteFileName: 0o600, "operator.token": 0o600, "serve.lock": 0o600,
		"not-ours": 0o755, // a directory inside is left alone
	} {
		if got[name] != want {
			t.Errorf("%s: mode %#o, want %#o", name, got[name], want)
		}
	}
	out := logs.String()
	for _, want := range []string{`"old_mode":"0755"`, `"old_mode":"0644"`, `"old_mode":"0664"`, "operator.token", `"new_mode":"0600"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "tightened"); n != 4 {
		t.Errorf("%d lines about tightened modes, want 4 (dir, db, token, lock):\n%s", n, out)
	}
}

func TestPostgresStoreTightensAnExistingDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sealbox.KeyFileName), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := keystoretest.PostgresURL(t)
	s, err := keystore.Open(context.Background(), dir, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := modes(t, dir)
	if got["."] != 0o700 || got[sealbox.KeyFileName] != 0o600 {
		t.Errorf("modes %v, want the dir 0700 and %s 0600", got, sealbox.KeyFileName)
	}
	missing := filepath.Join(t.TempDir(), "absent")
	s2, err := keystore.Open(context.Background(), missing, url)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a Postgres store created the data dir %s (%v)", missing, err)
	}
}
