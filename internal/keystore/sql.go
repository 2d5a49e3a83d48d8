package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver, no cgo
)

// Dialect names.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// SQLiteFileName is the database file under the data dir.
const SQLiteFileName = "dkimd.db"

// ZoneChannel is the Postgres NOTIFY channel a commit that changed the zone
// signals on, with the new serial as payload.
const ZoneChannel = "dkimd_zone"

// SQL is the Store over database/sql. Both dialects accept the same queries:
// $N placeholders, ON CONFLICT upserts and RETURNING.
type SQL struct {
	reader
	db      *sql.DB
	dialect string
	url     string

	log     *slog.Logger
	watch   watchers // Watch's subscribers
	leaders leaders  // Leader's lock holders, released by Close

	dataDir   string    // the data dir the store secured, "" for none
	modeFixes []ModeFix // what opening tightened, logged by SetLog
}

// OpenSQLite opens (creating if needed) the embedded database under dataDir.
func OpenSQLite(dataDir string) (*SQL, error) {
	fixes, err := secureDataDir(dataDir, true)
	if err != nil {
		return nil, err
	}
	// SQLite reports a read-only or full directory only as "unable to open
	// database file"; find out first, and say it plainly.
	if err := checkWritable(dataDir); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, SQLiteFileName)
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	// WAL with synchronous=FULL: a commit is on disk when it returns.
	// immediate transactions take the write lock up front, so two writers
	// queue on busy_timeout instead of failing on a lock upgrade.
	// secure_delete overwrites destroyed private keys' pages.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=secure_delete(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("keystore: open sqlite: %w", err)
	}
	s := newSQL(db, SQLite, path)
	s.dataDir, s.modeFixes = dataDir, fixes
	if err := s.Ping(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkWritable creates and removes a file in dir.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".dkimd-write-check-*")
	if err != nil {
		return fmt.Errorf("keystore: data dir %s is not writable (read-only file system, permissions or a full disk?): %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("keystore: data dir %s: %w", dir, err)
	}
	return nil
}

// OpenPostgres connects to a Postgres database by URL.
func OpenPostgres(ctx context.Context, url string) (*SQL, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("keystore: open postgres: %w", err)
	}
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := newSQL(db, Postgres, url)
	if err := s.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Open picks the dialect: Postgres when databaseURL is set, else SQLite
// under dataDir. With Postgres a data dir that exists (it may hold the KEK
// and the operator token) gets the same modes as SQLite's.
func Open(ctx context.Context, dataDir, databaseURL string) (*SQL, error) {
	if databaseURL == "" {
		return OpenSQLite(dataDir)
	}
	var fixes []ModeFix
	if dataDir != "" {
		var err error
		if fixes, err = secureDataDir(dataDir, false); err != nil {
			return nil, err
		}
	}
	s, err := OpenPostgres(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	s.modeFixes = fixes
	return s, nil
}

func newSQL(db *sql.DB, dialect, url string) *SQL {
	return &SQL{reader: reader{q: db, dialect: dialect}, db: db, dialect: dialect, url: url,
		log: slog.New(slog.DiscardHandler), watch: newWatchers()}
}

// SetLog sets the logger of the store's own loops (the Postgres change
// listener); the default discards. It first reports there the data dir
// modes that opening the store had to tighten.
func (s *SQL) SetLog(log *slog.Logger) {
	s.log = log
	s.logModeFixes()
}

// Dialect is SQLite or Postgres.
func (s *SQL) Dialect() string { return s.dialect }

// URL is the Postgres URL or the SQLite file path; a LISTEN connection or
// advisory lock holder opens its own connection with it.
func (s *SQL) URL() string { return s.url }

// DB exposes the pool for the few Postgres-only features (LISTEN, advisory
// locks) that live beside the store.
func (s *SQL) DB() *sql.DB { return s.db }

// Close ends the watchers and leaders, then closes the pool.
func (s *SQL) Close() error {
	s.watch.close()
	s.leaders.close()
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *SQL) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("keystore: ping: %w", classify(err))
	}
	return nil
}

// Update runs fn in one transaction.
func (s *SQL) Update(ctx context.Context, fn func(Tx) error) error {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keystore: begin: %w", classify(err))
	}
	t := &txn{reader: reader{q: sqlTx, dialect: s.dialect}, tx: sqlTx}
	if err := fn(t); err != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("keystore: rollback: %w", rbErr))
		}
		return err
	}
	serial, err := t.finishZoneChanges(ctx)
	if err != nil {
		_ = sqlTx.Rollback() // the error that matters is err
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("keystore: commit: %w", classify(err))
	}
	if serial != 0 {
		s.watch.notify()
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type reader struct {
	q       querier
	dialect string
}

type txn struct {
	reader
	tx      *sql.Tx
	changed map[change]struct{}
}

type change struct {
	kind  OwnerKind
	owner string
}

// zoneChanged records that an owner's published records changed; the
// commit then raises the zone serial once, journals the owner and tells the
// watchers. Keys are the only published records, and PutKey and DeleteKeys
// call it themselves, so no writer can forget it.
func (t *txn) zoneChanged(kind OwnerKind, owner string) {
	if t.changed == nil {
		t.changed = map[change]struct{}{}
	}
	t.changed[change{kind, owner}] = struct{}{}
}

// finishZoneChanges raises the serial once per transaction that changed the
// zone and journals which owners changed.
func (t *txn) finishZoneChanges(ctx context.Context) (uint32, error) {
	if len(t.changed) == 0 {
		return 0, nil
	}
	var serial int64
	err := t.q.QueryRowContext(ctx, `UPDATE zone_serial SET serial = serial + 1 WHERE id = 1 RETURNING serial`).Scan(&serial)
	if err != nil {
		return 0, fmt.Errorf("keystore: raise serial: %w", classify(err))
	}
	for c := range t.changed {
		if _, err := t.q.ExecContext(ctx, `INSERT INTO zone_changes (serial, owner_kind, owner) VALUES ($1, $2, $3)`,
			serial, string(c.kind), c.owner); err != nil {
			return 0, fmt.Errorf("keystore: journal zone change: %w", classify(err))
		}
	}
	if t.dialect == Postgres {
		// Delivered at commit, to every replica that LISTENs.
		if _, err := t.q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, ZoneChannel, fmt.Sprint(serial)); err != nil {
			return 0, fmt.Errorf("keystore: notify: %w", classify(err))
		}
	}
	return uint32(serial), nil
}

func (r reader) Serial(ctx context.Context) (uint32, error) {
	var serial int64
	if err := r.q.QueryRowContext(ctx, `SELECT serial FROM zone_serial WHERE id = 1`).Scan(&serial); err != nil {
		return 0, fmt.Errorf("keystore: serial: %w", classify(err))
	}
	return uint32(serial), nil
}

// micros stores times as unix microseconds; the zero time is 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// classify maps driver errors to the package's sentinels, keeping the cause.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case isUniqueViolation(err):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case isUnavailable(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func isUniqueViolation(err error) bool {
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		return coded.SQLState() == "23505"
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "PRIMARY KEY constraint failed")
}
