package keystore

import (
	"context"
	"fmt"
	"os"
)

// probeBlock is what the write probe writes to the data dir: one file
// system block, so that a full disk fails it rather than a zero-length
// file that needs no block at all.
const probeBlock = 4096

// WriteProbe commits one small write and reports an error when the store
// cannot take writes: a full disk, a read-only file system or database file
// (SQLite), a database in read-only mode (Postgres default_transaction_read_only,
// a hot standby). Reads may still work then, which is why Ping alone is no
// readiness check (docs/operator-guide.md, "/readyz").
//
// The write negates the newest schema_migrations row's applied_at twice in
// one transaction and commits: the row ends as it was, yet the database
// had to take a changed page (SQLite skips an update to the same value,
// Postgres refuses any UPDATE in a read-only transaction), and the probe
// needs no table of its own. On SQLite it also writes and syncs a block in
// the data dir, since a WAL that has room left takes one page even on a
// full disk.
func (s *SQL) WriteProbe(ctx context.Context) error {
	if s.dialect == SQLite && s.dataDir != "" {
		if err := probeDir(s.dataDir); err != nil {
			return err
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keystore: write probe: %w", classify(err))
	}
	defer func() { _ = tx.Rollback() }() // after Commit it only reports sql.ErrTxDone
	const flip = `UPDATE schema_migrations SET applied_at = -applied_at WHERE version = (SELECT MAX(version) FROM schema_migrations)`
	for range 2 {
		res, err := tx.ExecContext(ctx, flip)
		if err != nil {
			return fmt.Errorf("keystore: write probe: %w", classify(err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("keystore: write probe: %w", classify(err))
		}
		if n != 1 {
			return fmt.Errorf("keystore: write probe: updated %d schema_migrations rows, want 1 (not migrated?)", n)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("keystore: write probe: commit: %w", classify(err))
	}
	return nil
}

// probeDir writes, syncs and removes one block in dir.
func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".dkimd-write-probe-*")
	if err != nil {
		return fmt.Errorf("keystore: write probe: data dir %s: %w", dir, err)
	}
	name := f.Name()
	_, err = f.Write(make([]byte, probeBlock))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("keystore: write probe: data dir %s: %w", dir, err)
	}
	return nil
}
