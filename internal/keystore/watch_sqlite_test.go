package keystore_test

import (
	"context"
	"testing"
	"time"

	"dkimd/internal/keystore"
)

// TestSQLiteWatchSeesOtherProcesses: a commit made through another handle
// on the same file, as the CLI makes beside a running serve, reaches the
// watchers without waiting for a reconcile.
func TestSQLiteWatchSeesOtherProcesses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	serve, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer serve.Close()
	if _, err := serve.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cli, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	told := make(chan struct{}, 16)
	serve.Watch(ctx, func() {
		select {
		case told <- struct{}{}:
		default:
		}
	})
	time.Sleep(600 * time.Millisecond) // the poll takes its first reading
	drain := func() {
		for {
			select {
			case <-told:
			default:
				return
			}
		}
	}
	drain()

	// A commit that does not change the zone tells nobody.
	seedBrand(t, cli, "acme")
	select {
	case <-told:
		t.Fatal("a commit that left the zone alone was announced")
	case <-time.After(time.Second):
	}

	mustUpdate(t, cli, func(tx keystore.Tx) error {
		k := key("acme", "selector1", keystore.StateActive)
		k.OwnerKind = keystore.OwnerBrand
		return tx.PutKey(ctx, k)
	})
	select {
	case <-told:
	case <-time.After(5 * time.Second):
		t.Fatal("the other handle's zone change never reached the watcher")
	}
}
