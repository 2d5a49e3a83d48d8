package main

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"

	"dkimd/internal/config"
	"dkimd/internal/keystore"
)

// openStore opens the configured store, creating an embedded one if needed,
// without migrating it: what serve and migrate start with.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*keystore.SQL, error) {
	store, err := keystore.Open(ctx, cfg.DataDir, cfg.DatabaseURL)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, storeFailure(err, cfg)
	}
	store.SetLog(log.With(slog.String("component", "keystore")))
	return store, nil
}

// migrateStore applies the migrations the store lacks.
func migrateStore(ctx context.Context, store *keystore.SQL, log *slog.Logger) error {
	applied, err := store.Migrate(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(err, "cannot migrate the database schema (--log-level debug shows why)")
	}
	for _, m := range applied {
		log.Info("applied migration", slog.String("migration", m), slog.String("dialect", store.Dialect()))
	}
	return nil
}

// openExistingStore opens the store the other subcommands act on. It creates
// nothing and migrates nothing: an embedded store that does not exist yet,
// or a schema behind this binary, is an error that says what to run.
func openExistingStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*keystore.SQL, error) {
	if cfg.DatabaseURL == "" {
		path := filepath.Join(cfg.DataDir, keystore.SQLiteFileName)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fail(err, "no store in %s: run dkimd serve (or dkimd migrate) there first, or set --database-url", cfg.DataDir)
		}
	}
	store, err := keystore.Open(ctx, cfg.DataDir, cfg.DatabaseURL)
	if err != nil {
		return nil, storeFailure(err, cfg)
	}
	// Says which data dir entries opening had to tighten (docs/operator-guide.md, "Data dir").
	store.SetLog(log.With(slog.String("component", "keystore")))
	if err := store.SchemaCurrent(ctx); err != nil {
		store.Close()
		return nil, fail(err, "the database schema is behind this dkimd: run dkimd migrate")
	}
	return store, nil
}

// storeFailure says which store could not be opened, naming the Postgres
// host and database but never the URL's credentials.
func storeFailure(err error, cfg config.Config) error {
	if cfg.DatabaseURL != "" {
		where := "of --database-url"
		if u, perr := url.Parse(cfg.DatabaseURL); perr == nil && u.Host != "" {
			where = "at " + u.Host + u.Path
		}
		return fail(err, "cannot open the Postgres database %s (--log-level debug shows why)", where)
	}
	return fail(err, "cannot open the embedded store in %s: is it a writable directory? (--log-level debug shows why)", cfg.DataDir)
}
