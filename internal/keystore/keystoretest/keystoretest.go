// Package keystoretest opens real stores for tests: an SQLite file in a
// temporary dir, and a throw-away database on the machine's Postgres. When
// CI=true a missing Postgres fails the test instead of skipping it.
package keystoretest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"dkimd/internal/keystore"
)

// AdminURL is the Postgres the tests create their databases on;
// DKIMD_TEST_POSTGRES_URL overrides it.
func AdminURL() string {
	if u := os.Getenv("DKIMD_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// PostgresURL creates an empty database for this test, dropped at cleanup,
// and returns its URL. It skips when Postgres does not answer, unless CI=true.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin, err := sql.Open("pgx", AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("Postgres at %s does not answer and CI=true: %v", AdminURL(), err)
		}
		t.Skipf("Postgres at %s does not answer: %v", AdminURL(), err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "dkimd_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
		admin.Close()
	})
	u, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Open opens and migrates a store of the given dialect for one test.
func Open(t testing.TB, dialect string) *keystore.SQL {
	t.Helper()
	switch dialect {
	case keystore.SQLite:
		s, err := keystore.OpenSQLite(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return migrated(t, s)
	case keystore.Postgres:
		return OpenPostgres(t, PostgresURL(t))
	}
	t.Fatalf("unknown dialect %q", dialect)
	return nil
}

// OpenPostgres opens and migrates a store on a test database that exists
// already (PostgresURL): a second replica on the same database, or the
// same database reached through a proxy. It is closed at cleanup.
func OpenPostgres(t testing.TB, url string) *keystore.SQL {
	t.Helper()
	s, err := keystore.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return migrated(t, s)
}

func migrated(t testing.TB, s *keystore.SQL) *keystore.SQL {
	t.Helper()
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// Dialects is every dialect, for tests that run against each.
var Dialects = []string{keystore.SQLite, keystore.Postgres}

// ForEach runs f against a fresh store of each dialect, as subtests.
func ForEach(t *testing.T, f func(t *testing.T, s *keystore.SQL)) {
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) { f(t, Open(t, d)) })
	}
}
