package keystore_test

import (
	"context"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestRotationQueries(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		base := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
		err := s.Update(ctx, func(tx keystore.Tx) error {
			if _, err := tx.CreateBrand(ctx, keystore.Brand{Name: "b", SecretHash: "h", CreatedAt: base, UpdatedAt: base}); err != nil {
				return err
			}
			for _, d := range []keystore.Domain{
				{Name: "later.dk", NextCheckAt: base.Add(time.Hour)},
				{Name: "checked.dk", NextCheckAt: base.Add(-time.Hour), LastCheckedAt: base.Add(-2 * time.Hour)},
				{Name: "new.dk", NextCheckAt: base, Status: keystore.StatusPendingDNS},
				{Name: "rotate.dk", NextCheckAt: base.Add(-time.Minute), NextRotationAt: base.Add(-time.Minute), LastCheckedAt: base.Add(-time.Hour)},
				{Name: "switch.dk", NextCheckAt: base, PendingSwitchAt: base, LastCheckedAt: base.Add(-time.Hour)},
			} {
				d.Label, d.Brand, d.ActiveSelector, d.KeyBits, d.CreatedAt, d.UpdatedAt = d.Name[:len(d.Name)-3], "b", "selector1", 2048, base, base
				if d.Status == "" {
					d.Status = keystore.StatusActive
				}
				if _, err := tx.CreateDomain(ctx, d); err != nil {
					return err
				}
			}
			for _, k := range []keystore.Key{
				{Owner: "later.dk", Selector: "selector1", State: keystore.StateActive, PublishedAt: base.Add(-48 * time.Hour)},
				{Owner: "later.dk", Selector: "selector2", State: keystore.StateRetiring, RetiredAt: base.Add(-time.Hour)},
				{Owner: "new.dk", Selector: "selector1", State: keystore.StateActive, PublishedAt: base.Add(-time.Hour)},
				{Owner: "new.dk", Selector: "selector2", State: keystore.StateRevoked, RetiredAt: base.Add(time.Hour)},
				{OwnerKind: keystore.OwnerBrand, Owner: "b", Selector: "selector2", State: keystore.StateRevoked, RetiredAt: base},
			} {
				if k.OwnerKind == "" {
					k.OwnerKind = keystore.OwnerDomain
				}
				k.Algorithm, k.KeyBits, k.PublicKey, k.KEKID, k.Fingerprint, k.CreatedAt = "rsa", 2048, []byte("p"), "k", "f", base
				if err := tx.PutKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		t.Run("due domains, never checked first", func(t *testing.T) {
			due, err := s.DueDomains(ctx, base, 10)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range due {
				names = append(names, d.Name)
			}
			want := []string{"new.dk", "checked.dk", "rotate.dk", "switch.dk"}
			if len(names) != len(want) {
				t.Fatalf("due = %v, want %v", names, want)
			}
			for i := range want {
				if names[i] != want[i] {
					t.Fatalf("due = %v, want %v", names, want)
				}
			}
			if due, err := s.DueDomains(ctx, base, 2); err != nil || len(due) != 2 {
				t.Fatalf("limit 2: %d domains, %v", len(due), err)
			}
		})

		t.Run("retired keys", func(t *testing.T) {
			keys, err := s.RetiredKeys(ctx, base, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 2 || keys[0].Owner != "later.dk" || keys[1].Owner != "b" || keys[1].OwnerKind != keystore.OwnerBrand {
				t.Fatalf("retired keys = %+v", keys)
			}
		})

		t.Run("counts", func(t *testing.T) {
			st, err := s.DomainStatusCounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st[keystore.StatusActive] != 4 || st[keystore.StatusPendingDNS] != 1 {
				t.Fatalf("status counts = %v", st)
			}
			ks, err := s.KeyStateCounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ks[keystore.StateActive] != 2 || ks[keystore.StateRevoked] != 2 || ks[keystore.StateRetiring] != 1 {
				t.Fatalf("key counts = %v", ks)
			}
			oldest, err := s.OldestActiveKeyPublishedAt(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !oldest.Equal(base.Add(-48 * time.Hour)) {
				t.Fatalf("oldest active key published at %v", oldest)
			}
		})
	})
}
