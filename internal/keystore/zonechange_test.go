package keystore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestWritersCannotForgetZoneChanges: a writer path that touches keys, with
// no other call, raises the serial once per transaction, journals the owner
// and tells the watchers; one that touches no key raises nothing. A new
// writer therefore needs no convention to keep DNS current.
func TestWritersCannotForgetZoneChanges(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		seedBrand(t, s, "acme")
		var watched atomic.Int64
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s.Watch(wctx, func() { watched.Add(1) })

		cases := []struct {
			name    string
			write   func(tx keystore.Tx) error
			changed []keystore.ZoneChange
		}{
			{"no key touched", func(tx keystore.Tx) error {
				return tx.AddMaildomain(ctx, "acme", "example.com")
			}, nil},
			{"two keys put in one transaction", func(tx keystore.Tx) error {
				if _, err := tx.CreateDomain(ctx, newDomain("example.com", "example-com", "acme")); err != nil {
					return err
				}
				if err := tx.PutKey(ctx, key("example.com", "selector1", keystore.StateActive)); err != nil {
					return err
				}
				return tx.PutKey(ctx, key("example.com", "selector2", keystore.StateNext))
			}, []keystore.ZoneChange{{Kind: keystore.OwnerDomain, Owner: "example.com"}}},
			{"one slot deleted", func(tx keystore.Tx) error {
				return tx.DeleteKey(ctx, keystore.OwnerDomain, "example.com", "selector2")
			}, []keystore.ZoneChange{{Kind: keystore.OwnerDomain, Owner: "example.com"}}},
			{"deleting keys that do not exist", func(tx keystore.Tx) error {
				return tx.DeleteKeys(ctx, keystore.OwnerDomain, "nothing.example")
			}, nil},
			{"domain deleted", func(tx keystore.Tx) error {
				return tx.DeleteDomain(ctx, "example.com")
			}, []keystore.ZoneChange{{Kind: keystore.OwnerDomain, Owner: "example.com"}}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				before, err := s.Serial(ctx)
				if err != nil {
					t.Fatal(err)
				}
				watchedBefore := watched.Load()
				mustUpdate(t, s, c.write)
				after, err := s.Serial(ctx)
				if err != nil {
					t.Fatal(err)
				}
				wantSerial := before
				if len(c.changed) > 0 {
					wantSerial++
				}
				if after != wantSerial {
					t.Errorf("serial %d -> %d, want %d", before, after, wantSerial)
				}
				got, err := s.ZoneChangesSince(ctx, before, after)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(c.changed) {
					t.Errorf("journal %v, want %v", got, c.changed)
				}
				// In this process watchers run before Update returns. On
				// Postgres the listener's NOTIFY calls them too, later,
				// so only a missing call is an error there.
				calls := watched.Load() - watchedBefore
				if len(c.changed) > 0 && calls == 0 {
					t.Error("watchers not called for a change")
				}
				if len(c.changed) == 0 && calls > 0 && s.Dialect() == keystore.SQLite {
					t.Errorf("watchers called %d times without a change", calls)
				}
			})
		}
	})
}
