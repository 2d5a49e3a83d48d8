package keystore_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func openMigratedSQLite(t *testing.T, dir string) *keystore.SQL {
	t.Helper()
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// chattr sets or clears the immutable flag: as root, which the tests run
// as, a chmod'ed file stays writable, an immutable one does not (even
// through a descriptor opened before).
func chattr(t *testing.T, flag string, paths ...string) {
	t.Helper()
	out, err := exec.Command("chattr", append([]string{flag}, paths...)...).CombinedOutput()
	if err != nil {
		t.Skipf("chattr %s: %v %s (needs CAP_LINUX_IMMUTABLE on a file system with the flag)", flag, err, out)
	}
}

func TestWriteProbeSQLiteReadOnlyFile(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr (e2fsprogs) not installed")
	}
	dir := t.TempDir()
	s := openMigratedSQLite(t, dir)
	ctx := context.Background()
	if err := s.WriteProbe(ctx); err != nil {
		t.Fatalf("writable store: %v", err)
	}
	db := filepath.Join(dir, keystore.SQLiteFileName)
	files := []string{db, db + "-wal"}
	chattr(t, "+i", files...)
	t.Cleanup(func() { exec.Command("chattr", append([]string{"-i"}, files...)...).Run() })
	err := s.WriteProbe(ctx)
	if err == nil {
		t.Fatal("write probe passed on a read-only database file")
	}
	if !strings.Contains(err.Error(), "write probe") {
		t.Errorf("error %q does not say it is the write probe", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("ping fails too (%v): the probe is what tells the store is read-only", err)
	}
	chattr(t, "-i", files...)
	if err := s.WriteProbe(ctx); err != nil {
		t.Errorf("after the file is writable again: %v", err)
	}
}

// TestWriteProbeSQLiteFullDisk puts the data dir on a small tmpfs of its
// own and fills it.
func TestWriteProbeSQLiteFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	s := openMigratedSQLite(t, dir)
	ctx := context.Background()
	if err := s.WriteProbe(ctx); err != nil {
		t.Fatalf("store with room: %v", err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 64<<10)
	for {
		if _, err = f.Write(block); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk ended with %v, want ENOSPC", err)
	}
	if err := s.WriteProbe(ctx); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Errorf("write probe on a full disk: %v, want an error saying no space", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteProbe(ctx); err != nil {
		t.Errorf("after room was made: %v", err)
	}
}

func TestWriteProbePostgresReadOnly(t *testing.T) {
	u := keystoretest.PostgresURL(t)
	ctx := context.Background()
	rw, err := keystore.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rw.WriteProbe(ctx); err != nil {
		t.Fatalf("writable database: %v", err)
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(parsed.Path, "/")
	admin, err := sql.Open("pgx", keystoretest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	setReadOnly := func(on string) {
		t.Helper()
		if _, err := admin.ExecContext(ctx, "ALTER DATABASE "+name+" SET default_transaction_read_only = "+on); err != nil {
			t.Fatal(err)
		}
	}
	setReadOnly("on")
	// The setting applies to new sessions: a new pool, as after a failover.
	ro, err := keystore.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Ping(ctx); err != nil {
		t.Fatalf("ping on a read-only database: %v", err)
	}
	err = ro.WriteProbe(ctx)
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write probe on a read-only database: %v, want a read-only error", err)
	}
	setReadOnly("off")
	again, err := keystore.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.WriteProbe(ctx); err != nil {
		t.Errorf("after read-only mode ended: %v", err)
	}
}
