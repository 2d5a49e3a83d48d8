package keystore_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestPostgresLeader runs two replicas' competitors for the rotation lock
// on a real Postgres: one leads; when its connection is killed, the other
// takes over.
func TestPostgresLeader(t *testing.T) {
	url := keystoretest.PostgresURL(t)
	ctx := context.Background()
	sa, sb := keystoretest.OpenPostgres(t, url), keystoretest.OpenPostgres(t, url)
	a, b := sa.Leader("rotation"), sb.Leader("rotation")
	defer a.Close()
	defer b.Close()

	if held, err := a.Acquire(ctx); err != nil || !held {
		t.Fatalf("a: %v %v, want leader", held, err)
	}
	if held, err := b.Acquire(ctx); err != nil || held {
		t.Fatalf("b: %v %v, want follower", held, err)
	}
	if held, err := a.Acquire(ctx); err != nil || !held {
		t.Fatalf("a again: %v %v, want still leader", held, err)
	}

	admin, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var killed bool
	if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, int(keystore.LeaderPID(a))).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate leader's backend: %v %v", killed, err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		held, err := b.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never took over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The old leader notices its loss and does not lead again while b holds.
	held, _ := a.Acquire(ctx)
	if held {
		t.Fatal("a still leads after its connection was killed")
	}
	if held, _ := a.Acquire(ctx); held {
		t.Fatal("a took the lock b holds")
	}

	// b steps down on Close; a takes over.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if held, _ := a.Acquire(ctx); held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a never took over after b closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSQLiteLeaderAlwaysLeads: one serve per data dir, so its one process
// leads.
func TestSQLiteLeaderAlwaysLeads(t *testing.T) {
	l := keystoretest.Open(t, keystore.SQLite).Leader("rotation")
	if held, err := l.Acquire(context.Background()); err != nil || !held {
		t.Fatalf("Acquire = %v, %v; want leader", held, err)
	}
}
