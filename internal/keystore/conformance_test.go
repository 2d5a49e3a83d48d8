package keystore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func mustUpdate(t *testing.T, s keystore.Store, fn func(tx keystore.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func seedBrand(t *testing.T, s keystore.Store, name string) {
	t.Helper()
	mustUpdate(t, s, func(tx keystore.Tx) error {
		_, err := tx.CreateBrand(context.Background(), keystore.Brand{Name: name, SecretHash: "h", CreatedAt: t0, UpdatedAt: t0})
		return err
	})
}

func newDomain(name, label, brand string) keystore.Domain {
	return keystore.Domain{Name: name, Label: label, Brand: brand, Status: keystore.StatusPendingDNS,
		ActiveSelector: "selector1", KeyBits: 2048, CreatedAt: t0, UpdatedAt: t0, NextRotationAt: t0.Add(time.Hour)}
}

func key(owner, selector string, state keystore.KeyState) keystore.Key {
	return keystore.Key{OwnerKind: keystore.OwnerDomain, Owner: owner, Selector: selector, State: state, Algorithm: "rsa",
		KeyBits: 2048, PublicKey: []byte("pub-" + selector), SealedPrivateKey: []byte("sealed"), KEKID: "k1",
		Fingerprint: "fp-" + selector, CreatedAt: t0, PublishedAt: t0}
}

func TestConformance(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		t.Run("migrate is idempotent", func(t *testing.T) {
			applied, err := s.Migrate(ctx)
			if err != nil || len(applied) != 0 {
				t.Fatalf("second Migrate applied %v, %v", applied, err)
			}
			if err := s.SchemaCurrent(ctx); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("brands", func(t *testing.T) {
			seedBrand(t, s, "acme")
			err := s.Update(ctx, func(tx keystore.Tx) error {
				_, err := tx.CreateBrand(ctx, keystore.Brand{Name: "acme", SecretHash: "x", CreatedAt: t0, UpdatedAt: t0})
				return err
			})
			if !errors.Is(err, keystore.ErrConflict) {
				t.Fatalf("duplicate brand: %v", err)
			}
			b, err := s.Brand(ctx, "acme")
			if err != nil || b.SecretHash != "h" || !b.CreatedAt.Equal(t0) {
				t.Fatalf("Brand = %+v, %v", b, err)
			}
			mustUpdate(t, s, func(tx keystore.Tx) error {
				b.SecretHash, b.RotationInterval, b.UpdatedAt = "h2", 90*24*time.Hour, t0.Add(time.Hour)
				_, err := tx.UpdateBrand(ctx, b)
				return err
			})
			b, _ = s.Brand(ctx, "acme")
			if b.SecretHash != "h2" || b.RotationInterval != 90*24*time.Hour {
				t.Fatalf("after update: %+v", b)
			}
			if _, err := s.Brand(ctx, "nope"); !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("missing brand: %v", err)
			}
			bs, err := s.Brands(ctx)
			if err != nil || len(bs) != 1 {
				t.Fatalf("Brands = %v, %v", bs, err)
			}
		})

		t.Run("maildomains", func(t *testing.T) {
			mustUpdate(t, s, func(tx keystore.Tx) error { return tx.AddMaildomain(ctx, "acme", "example.com") })
			err := s.Update(ctx, func(tx keystore.Tx) error { return tx.AddMaildomain(ctx, "acme", "example.com") })
			if !errors.Is(err, keystore.ErrConflict) {
				t.Fatalf("duplicate maildomain: %v", err)
			}
			err = s.Update(ctx, func(tx keystore.Tx) error { return tx.AddMaildomain(ctx, "ghost", "example.com") })
			if err == nil {
				t.Fatal("maildomain of a missing brand accepted")
			}
			ok, err := s.IsMaildomain(ctx, "acme", "example.com")
			if err != nil || !ok {
				t.Fatalf("IsMaildomain = %v, %v", ok, err)
			}
			err = s.Update(ctx, func(tx keystore.Tx) error { return tx.RemoveMaildomain(ctx, "acme", "nope.com") })
			if !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("remove missing maildomain: %v", err)
			}
		})

		t.Run("domain with keys, serial and rollback", func(t *testing.T) {
			before, err := s.Serial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wctx, stopWatch := context.WithCancel(ctx)
			defer stopWatch()
			changes := make(chan struct{}, 1)
			s.Watch(wctx, func() {
				select {
				case changes <- struct{}{}:
				default:
				}
			})
			mustUpdate(t, s, func(tx keystore.Tx) error {
				if _, err := tx.CreateDomain(ctx, newDomain("example.com", "example-com", "acme")); err != nil {
					return err
				}
				for _, sel := range []string{"selector1", "selector2"} {
					if err := tx.PutKey(ctx, key("example.com", sel, keystore.StateNext)); err != nil {
						return err
					}
				}
				return tx.AppendAudit(ctx, keystore.AuditRecord{At: t0, Actor: "brand:acme", Action: "domain.create", Brand: "acme", Domain: "example.com", RequestID: "r1"})
			})
			after, _ := s.Serial(ctx)
			if after != before+1 {
				t.Fatalf("serial %d -> %d, want +1", before, after)
			}
			// In this process the watcher has run when Update returns.
			select {
			case <-changes:
			default:
				t.Fatal("Watch was not called by a commit that changed the zone")
			}

			// A failing transaction leaves nothing behind, serial included.
			boom := errors.New("boom")
			err = s.Update(ctx, func(tx keystore.Tx) error {
				if _, err := tx.CreateDomain(ctx, newDomain("other.com", "other-com", "acme")); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Update = %v, want boom", err)
			}
			if _, err := s.Domain(ctx, "other.com"); !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("rolled-back domain: %v", err)
			}
			if now, _ := s.Serial(ctx); now != after {
				t.Fatalf("rollback moved the serial to %d", now)
			}

			d, err := s.Domain(ctx, "example.com")
			if err != nil || d.Label != "example-com" || d.Version != 1 || !d.NextRotationAt.Equal(t0.Add(time.Hour)) {
				t.Fatalf("Domain = %+v, %v", d, err)
			}
			if d2, err := s.DomainByLabel(ctx, "example-com"); err != nil || d2.Name != "example.com" {
				t.Fatalf("DomainByLabel = %+v, %v", d2, err)
			}
			keys, err := s.Keys(ctx, keystore.OwnerDomain, "example.com")
			if err != nil || len(keys) != 2 || keys[0].Selector != "selector1" || string(keys[1].PublicKey) != "pub-selector2" {
				t.Fatalf("Keys = %+v, %v", keys, err)
			}
		})

		t.Run("label clash", func(t *testing.T) {
			err := s.Update(ctx, func(tx keystore.Tx) error {
				_, err := tx.CreateDomain(ctx, newDomain("example-com.x", "example-com", "acme"))
				return err
			})
			if !errors.Is(err, keystore.ErrConflict) {
				t.Fatalf("label clash: %v", err)
			}
		})

		t.Run("optimistic update", func(t *testing.T) {
			d, _ := s.Domain(ctx, "example.com")
			d.Status, d.UpdatedAt = keystore.StatusActive, t0.Add(time.Minute)
			var updated keystore.Domain
			mustUpdate(t, s, func(tx keystore.Tx) error {
				var err error
				updated, err = tx.UpdateDomain(ctx, d)
				return err
			})
			if updated.Version != 2 || updated.Status != keystore.StatusActive {
				t.Fatalf("updated = %+v", updated)
			}
			err := s.Update(ctx, func(tx keystore.Tx) error { _, err := tx.UpdateDomain(ctx, d); return err })
			if !errors.Is(err, keystore.ErrStale) {
				t.Fatalf("stale update: %v", err)
			}
		})

		t.Run("one key per slot", func(t *testing.T) {
			k := key("example.com", "selector2", keystore.StateRevoked)
			k.PublicKey, k.SealedPrivateKey = nil, nil
			mustUpdate(t, s, func(tx keystore.Tx) error { return tx.PutKey(ctx, k) })
			keys, _ := s.Keys(ctx, keystore.OwnerDomain, "example.com")
			if len(keys) != 2 || keys[1].State != keystore.StateRevoked || len(keys[1].PublicKey) != 0 || keys[1].SealedPrivateKey != nil {
				t.Fatalf("after revoke: %+v", keys)
			}
		})

		t.Run("listing and pagination", func(t *testing.T) {
			mustUpdate(t, s, func(tx keystore.Tx) error {
				for _, n := range []string{"b.com", "a.com", "c.com"} {
					if _, err := tx.CreateDomain(ctx, newDomain(n, n[:1]+"-com", "acme")); err != nil {
						return err
					}
				}
				return nil
			})
			page, err := s.Domains(ctx, "acme", "", 2)
			if err != nil || len(page) != 2 || page[0].Name != "a.com" || page[1].Name != "b.com" {
				t.Fatalf("page 1 = %v, %v", page, err)
			}
			page, _ = s.Domains(ctx, "acme", "b.com", 2)
			if len(page) != 2 || page[0].Name != "c.com" || page[1].Name != "example.com" {
				t.Fatalf("page 2 = %v", page)
			}
			byDomain, err := s.BrandDomainKeys(ctx, "acme", "a.com", "example.com")
			if err != nil || len(byDomain) != 1 || len(byDomain["example.com"]) != 2 || byDomain["example.com"][0].Selector != "selector1" {
				t.Fatalf("BrandDomainKeys = %v, %v", byDomain, err)
			}
			if none, err := s.BrandDomainKeys(ctx, "other", "", "zzz"); err != nil || len(none) != 0 {
				t.Fatalf("BrandDomainKeys(other) = %v, %v", none, err)
			}
			if n, _ := s.CountDomains(ctx, "acme"); n != 4 {
				t.Fatalf("CountDomains = %d", n)
			}
		})

		t.Run("delete brand with domains is refused", func(t *testing.T) {
			err := s.Update(ctx, func(tx keystore.Tx) error { return tx.DeleteBrand(ctx, "acme") })
			if !errors.Is(err, keystore.ErrConflict) {
				t.Fatalf("DeleteBrand = %v", err)
			}
		})

		t.Run("delete domain destroys keys", func(t *testing.T) {
			mustUpdate(t, s, func(tx keystore.Tx) error { return tx.DeleteDomain(ctx, "example.com") })
			if keys, _ := s.Keys(ctx, keystore.OwnerDomain, "example.com"); len(keys) != 0 {
				t.Fatalf("keys left: %v", keys)
			}
			err := s.Update(ctx, func(tx keystore.Tx) error { return tx.DeleteDomain(ctx, "example.com") })
			if !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("second delete: %v", err)
			}
		})

		t.Run("audit", func(t *testing.T) {
			mustUpdate(t, s, func(tx keystore.Tx) error {
				return tx.AppendAudit(ctx, keystore.AuditRecord{At: t0, Actor: "operator", Action: "brand.create", Brand: "zeta"})
			})
			all, err := s.Audit(ctx, keystore.AuditFilter{})
			if err != nil || len(all) != 2 || all[0].Action != "brand.create" || all[1].RequestID != "r1" {
				t.Fatalf("Audit = %+v, %v", all, err)
			}
			only, _ := s.Audit(ctx, keystore.AuditFilter{Brand: "acme"})
			if len(only) != 1 || only[0].Domain != "example.com" {
				t.Fatalf("Audit(acme) = %+v", only)
			}
			older, _ := s.Audit(ctx, keystore.AuditFilter{BeforeID: all[0].ID})
			if len(older) != 1 || older[0].ID != all[1].ID {
				t.Fatalf("Audit(before) = %+v", older)
			}
		})
	})
}

func TestSQLiteSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	seedBrand(t, s, "acme")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SchemaCurrent(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Brand(ctx, "acme"); err != nil {
		t.Fatalf("brand lost across reopen: %v", err)
	}
}
