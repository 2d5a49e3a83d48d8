package rotation_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/rotation"
)

// TestPGLeader runs two competitors for the advisory lock on a real
// Postgres: one leads; when its connection is killed, the other takes over.
func TestPGLeader(t *testing.T) {
	url := keystoretest.PostgresURL(t)
	ctx := context.Background()
	a, b := rotation.NewPGLeader(url, rotation.LockID), rotation.NewPGLeader(url, rotation.LockID)
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
	if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, int(a.PID())).Scan(&killed); err != nil || !killed {
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

// TestRunner runs the loop with a real clock and checks that a new domain is
// checked within a tick of its creation.
func TestRunner(t *testing.T) {
	e := newEnv(t, "", rotation.Config{}, allOK)
	e.brand(t, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := &rotation.Runner{Service: e.rot, Leader: rotation.Solo{}, Interval: 20 * time.Millisecond}
	go func() { done <- r.Run(ctx) }()
	e.domain(t, "acme", "example.com", false)
	deadline := time.Now().Add(10 * time.Second)
	for e.get(t, "example.com").Status != "active" {
		if time.Now().After(deadline) {
			t.Fatal("new domain not checked by the running loop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
