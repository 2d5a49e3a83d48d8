package keystore

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"dkimd/migrations"
)

// migrationLockID is the Postgres advisory lock that serialises replicas
// migrating at the same start-up.
const migrationLockID = 0x646b696d64 // "dkimd"

type migration struct {
	version int
	name    string
	sql     string
}

func (s *SQL) migrations() ([]migration, error) {
	dir := s.dialect
	entries, err := fs.ReadDir(migrations.FS, dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("keystore: migration %s: name must start with a number", e.Name())
		}
		body, err := fs.ReadFile(migrations.FS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("keystore: migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Migrate applies the migrations that are missing, each in its own
// transaction, and returns the names it applied. It refuses a database whose
// schema is newer than this binary knows.
func (s *SQL) Migrate(ctx context.Context) ([]string, error) {
	if _, err := s.db.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return nil, fmt.Errorf("keystore: migrations table: %w", classify(err))
	}
	all, err := s.migrations()
	if err != nil {
		return nil, err
	}
	if err := s.checkNotAhead(ctx, all); err != nil {
		return nil, err
	}
	var applied []string
	for _, m := range all {
		done, err := s.applyOne(ctx, m)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.name)
		}
	}
	return applied, nil
}

func (s *SQL) applyOne(ctx context.Context, m migration) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("keystore: migration %s: %w", m.name, classify(err))
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockID); err != nil {
			return false, fmt.Errorf("keystore: migration lock: %w", classify(err))
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
		return false, fmt.Errorf("keystore: migration %s: %w", m.name, classify(err))
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("keystore: migration %s: %w", m.name, classify(err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.version, m.name, time.Now().UnixMicro()); err != nil {
		return false, fmt.Errorf("keystore: migration %s: record: %w", m.name, classify(err))
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("keystore: migration %s: commit: %w", m.name, classify(err))
	}
	return true, nil
}

func (s *SQL) checkNotAhead(ctx context.Context, all []migration) error {
	var newest int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("keystore: schema version: %w", classify(err))
	}
	if len(all) > 0 && newest > all[len(all)-1].version {
		return fmt.Errorf("keystore: database schema is at version %d, newer than this dkimd knows (%d): upgrade dkimd", newest, all[len(all)-1].version)
	}
	return nil
}

// SchemaCurrent reports whether every migration this binary knows is applied;
// /readyz uses it, and serve refuses a schema that is behind.
func (s *SQL) SchemaCurrent(ctx context.Context) error {
	all, err := s.migrations()
	if err != nil {
		return err
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		return fmt.Errorf("keystore: schema version: %w", classify(err))
	}
	if n < len(all) {
		return fmt.Errorf("keystore: schema is behind: %d of %d migrations applied; run dkimd migrate", n, len(all))
	}
	return nil
}
