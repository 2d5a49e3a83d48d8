package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"dkimd/internal/keystore"
)

// tmpfs mounts a small tmpfs at a new temporary dir, for disk-full and
// read-only faults; it needs root (CI runs as root and must not skip).
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return dir
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s: %v: %s", opts, err, out)
	}
}

func integrityOK(t *testing.T, s *keystore.SQL) {
	t.Helper()
	var res string
	if err := s.DB().QueryRowContext(context.Background(), `PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check = %q, %v", res, err)
	}
}

func bigAudit(n int) keystore.AuditRecord {
	return keystore.AuditRecord{At: t0, Actor: "test", Action: "fill", Detail: fmt.Sprintf("%d:%s", n, strings.Repeat("x", 32<<10))}
}

// TestSQLiteDiskFull fills the data dir's file system: writes fail with an
// error that says so, everything committed before stays readable, the file
// passes an integrity check, and writes work again once there is room.
func TestSQLiteDiskFull(t *testing.T) {
	dir := tmpfs(t, "3m")
	ctx := context.Background()
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	seedBrand(t, s, "acme")
	committed := 0
	var fullErr error
	for i := 0; i < 1000; i++ {
		err := s.Update(ctx, func(tx keystore.Tx) error { return tx.AppendAudit(ctx, bigAudit(i)) })
		if err != nil {
			fullErr = err
			break
		}
		committed++
	}
	if fullErr == nil {
		t.Fatal("3 MiB never filled up")
	}
	if msg := strings.ToLower(fullErr.Error()); !strings.Contains(msg, "full") && !strings.Contains(msg, "space") {
		t.Fatalf("disk-full error does not say so: %v", fullErr)
	}
	if _, err := s.Brand(ctx, "acme"); err != nil {
		t.Fatalf("brand unreadable on a full disk: %v", err)
	}
	recs, err := s.Audit(ctx, keystore.AuditFilter{Limit: keystore.MaxAuditPage})
	if err != nil || len(recs) < committed {
		t.Fatalf("after disk full: %d audit records, %v; %d were committed", len(recs), err, committed)
	}
	integrityOK(t, s)

	remount(t, dir, "size=16m")
	if err := s.Update(ctx, func(tx keystore.Tx) error { return tx.AppendAudit(ctx, bigAudit(-1)) }); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	integrityOK(t, s)
}

// TestSQLiteReadOnly starts on a data dir whose file system is read-only,
// as after an operator's mistake or a failing disk: the store either refuses
// to open with an error that says why, or opens for reading and refuses
// writes clearly; either way nothing changes, and once the file system is
// writable again everything is as before.
func TestSQLiteReadOnly(t *testing.T) {
	dir := tmpfs(t, "16m")
	ctx := context.Background()
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	seedBrand(t, s, "acme")
	serial, err := s.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	remount(t, dir, "ro")
	if ro, err := keystore.OpenSQLite(dir); err != nil {
		if msg := strings.ToLower(err.Error()); !strings.Contains(msg, "read") {
			t.Fatalf("opening on a read-only file system failed without saying why: %v", err)
		}
	} else {
		err = ro.Update(ctx, func(tx keystore.Tx) error {
			if _, err := tx.CreateBrand(ctx, keystore.Brand{Name: "zeta", SecretHash: "h", CreatedAt: t0, UpdatedAt: t0}); err != nil {
				return err
			}
			return nil
		})
		if err == nil {
			t.Fatal("write on a read-only file system succeeded")
		}
		if msg := strings.ToLower(err.Error()); !strings.Contains(msg, "read") {
			t.Fatalf("read-only error does not say so: %v", err)
		}
		ro.Close()
	}

	remount(t, dir, "rw")
	s, err = keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Brand(ctx, "acme"); err != nil {
		t.Fatalf("brand lost: %v", err)
	}
	if _, err := s.Brand(ctx, "zeta"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the refused write left a brand behind: %v", err)
	}
	if now, _ := s.Serial(ctx); now != serial {
		t.Fatalf("the refused write moved the serial %d -> %d", serial, now)
	}
	integrityOK(t, s)
	seedBrand(t, s, "zeta")
}
