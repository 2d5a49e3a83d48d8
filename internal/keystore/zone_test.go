package keystore_test

import (
	"bytes"
	"context"
	"reflect"
	"sort"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestZoneRecords(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		seedBrand(t, s, "acme")
		start, err := s.Serial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, s, func(tx keystore.Tx) error {
			if _, err := tx.CreateDomain(ctx, newDomain("example.com", "example-com", "acme")); err != nil {
				return err
			}
			for _, k := range []keystore.Key{key("example.com", "selector1", keystore.StateActive), key("example.com", "selector2", keystore.StateNext)} {
				if err := tx.PutKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		})
		mustUpdate(t, s, func(tx keystore.Tx) error {
			bk := key("acme", "selector1", keystore.StateActive)
			bk.OwnerKind = keystore.OwnerBrand
			rk := key("acme", "selector2", keystore.StateRevoked)
			rk.OwnerKind, rk.PublicKey = keystore.OwnerBrand, nil
			for _, k := range []keystore.Key{bk, rk} {
				if err := tx.PutKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		})
		mid, err := s.Serial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if mid != start+2 {
			t.Fatalf("serial %d after two zone changes from %d", mid, start)
		}

		var all []keystore.ZoneRecord
		if err := s.ZoneRecords(ctx, func(r keystore.ZoneRecord) error {
			r.PublicKey = bytes.Clone(r.PublicKey) // valid only until fn returns
			all = append(all, r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		sort.Slice(all, func(i, j int) bool {
			return string(all[i].Kind)+all[i].Owner+all[i].Selector < string(all[j].Kind)+all[j].Owner+all[j].Selector
		})
		if len(all) != 4 {
			t.Fatalf("got %d records, want 4: %+v", len(all), all)
		}
		if s.Dialect() == keystore.Postgres {
			// The estimate is the planner's, which ANALYZE brings up to date.
			if _, err := s.DB().ExecContext(ctx, "ANALYZE keys"); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.ZoneRecordEstimate(ctx); err != nil || n != 4 {
			t.Errorf("ZoneRecordEstimate = %d, %v; want 4", n, err)
		}
		want := []struct {
			kind                   keystore.OwnerKind
			owner, label, selector string
			state                  keystore.KeyState
			emptyKey               bool
		}{
			{keystore.OwnerBrand, "acme", "", "selector1", keystore.StateActive, false},
			{keystore.OwnerBrand, "acme", "", "selector2", keystore.StateRevoked, true},
			{keystore.OwnerDomain, "example.com", "example-com", "selector1", keystore.StateActive, false},
			{keystore.OwnerDomain, "example.com", "example-com", "selector2", keystore.StateNext, false},
		}
		for i, w := range want {
			r := all[i]
			if r.Kind != w.kind || r.Owner != w.owner || r.Label != w.label || r.Selector != w.selector || r.State != w.state ||
				(len(r.PublicKey) == 0) != w.emptyKey || r.Algorithm != "rsa" {
				t.Errorf("record %d = %+v, want %+v", i, r, w)
			}
			if !w.emptyKey && string(r.PublicKey) != "pub-"+w.selector {
				t.Errorf("record %d has public key %q, want %q", i, r.PublicKey, "pub-"+w.selector)
			}
		}

		own, err := s.OwnerZoneRecords(ctx, keystore.OwnerDomain, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(own, all[2:]) {
			t.Errorf("OwnerZoneRecords = %+v, want %+v", own, all[2:])
		}

		changes, err := s.ZoneChangesSince(ctx, start, mid)
		if err != nil {
			t.Fatal(err)
		}
		wantChanges := []keystore.ZoneChange{{Kind: keystore.OwnerBrand, Owner: "acme"}, {Kind: keystore.OwnerDomain, Owner: "example.com"}}
		if !reflect.DeepEqual(changes, wantChanges) {
			t.Errorf("changes since %d = %+v, want %+v", start, changes, wantChanges)
		}
		if changes, err := s.ZoneChangesSince(ctx, start+1, mid); err != nil || len(changes) != 1 || changes[0].Owner != "acme" {
			t.Errorf("changes since %d = %+v, %v; want only acme", start+1, changes, err)
		}

		mustUpdate(t, s, func(tx keystore.Tx) error {
			if err := tx.DeleteKeys(ctx, keystore.OwnerDomain, "example.com"); err != nil {
				return err
			}
			if err := tx.DeleteDomain(ctx, "example.com"); err != nil {
				return err
			}
			return nil
		})
		if own, err := s.OwnerZoneRecords(ctx, keystore.OwnerDomain, "example.com"); err != nil || len(own) != 0 {
			t.Errorf("after delete: %+v, %v", own, err)
		}
		if changes, err := s.ZoneChangesSince(ctx, mid, mid+1); err != nil || len(changes) != 1 || changes[0].Owner != "example.com" {
			t.Errorf("changes after delete = %+v, %v", changes, err)
		}
	})
}
