package rotation_test

import (
	"context"
	"testing"
	"time"

	"dkimd/internal/rotation"
)

// TestRunner runs the loop with a real clock and checks that a new domain is
// checked within a tick of its creation.
func TestRunner(t *testing.T) {
	e := newEnv(t, "", rotation.Config{}, allOK)
	e.brand(t, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := &rotation.Runner{Service: e.rot, Leader: soloLeader{}, Interval: 20 * time.Millisecond}
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

// soloLeader always leads, as the SQLite store's leader does.
type soloLeader struct{}

func (soloLeader) Acquire(context.Context) (bool, error) { return true, nil }
func (soloLeader) Close() error                          { return nil }
