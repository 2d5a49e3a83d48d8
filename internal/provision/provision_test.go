package provision_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/sealbox"
)

var actor = provision.Actor{Name: "test", RequestID: "r1"}

func fixedNow() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func TestSecretHash(t *testing.T) {
	secret, err := provision.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, err := provision.NewSecret()
	if err != nil || other == secret {
		t.Fatalf("two secrets %q %q, %v", secret, other, err)
	}
	hash, err := provision.HashSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	again, err := provision.HashSecret(secret)
	if err != nil || again == hash {
		t.Errorf("hashes of one secret are equal (no salt?): %v", err)
	}
	for _, tc := range []struct {
		name, hash, secret string
		ok                 bool
		err                bool
	}{
		{"right", hash, secret, true, false},
		{"wrong", hash, other, false, false},
		{"empty", hash, "", false, false},
		{"not a hash", "plain", secret, false, true},
		{"bad parameters", "$argon2id$v=19$m=x$AAAA$AAAA", secret, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := provision.VerifySecret(tc.hash, tc.secret)
			if ok != tc.ok || (err != nil) != tc.err {
				t.Errorf("VerifySecret = %v, %v", ok, err)
			}
		})
	}
}

func TestCreateAndDeleteDomain(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		ctx := context.Background()
		svc := provisiontest.Service(t, store, "oxcloud.zone", fixedNow)
		for _, b := range []string{"acme", "other"} {
			if _, err := svc.CreateBrand(ctx, b, actor); err != nil {
				t.Fatal(err)
			}
		}
		for _, md := range []struct{ brand, domain string }{{"acme", "spamtrap.dk"}, {"acme", "a-b.dk"}, {"acme", "a.b.dk"}, {"other", "spamtrap.dk"}} {
			if err := svc.AddMaildomain(ctx, md.brand, md.domain, actor); err != nil {
				t.Fatal(err)
			}
		}
		d, keys, created, err := svc.CreateDomain(ctx, "acme", "spamtrap.dk", provision.DomainOptions{}, actor)
		if err != nil || !created {
			t.Fatalf("create: %v, created %v", err, created)
		}
		if d.Label != "spamtrap-dk" || d.ActiveSelector != "selector1" || d.Status != keystore.StatusPendingDNS || len(keys) != 2 {
			t.Errorf("domain %+v, %d keys", d, len(keys))
		}
		for _, k := range keys {
			priv, err := dkimkey.Open(svc.Box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
			if err != nil {
				t.Fatal(err)
			}
			pub, err := dkimkey.PublicBytes(priv.Public())
			if err != nil || string(pub) != string(k.PublicKey) {
				t.Errorf("%s: sealed key does not match its public key", k.Selector)
			}
		}
		t.Run("idempotent", func(t *testing.T) {
			_, again, created, err := svc.CreateDomain(ctx, "acme", "spamtrap.dk", provision.DomainOptions{KeyBits: 4096}, actor)
			if err != nil || created || again[0].Fingerprint != keys[0].Fingerprint {
				t.Errorf("second create: %v, created %v", err, created)
			}
		})
		for _, tc := range []struct {
			name, brand, domain string
			opts                provision.DomainOptions
			want                error
		}{
			{"held by other", "other", "spamtrap.dk", provision.DomainOptions{}, provision.ErrHeldByOther},
			{"not a maildomain", "acme", "nope.dk", provision.DomainOptions{}, provision.ErrNotMaildomain},
			{"bad bits", "acme", "a-b.dk", provision.DomainOptions{KeyBits: 1024}, provision.ErrBadOptions},
			{"label too long", "acme", strings.Repeat("x", 51) + ".dk", provision.DomainOptions{}, domainname.ErrLabelTooLong},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, _, err := svc.CreateDomain(ctx, tc.brand, tc.domain, tc.opts, actor)
				if !errors.Is(err, tc.want) {
					t.Errorf("err %v, want %v", err, tc.want)
				}
			})
		}
		t.Run("label clash", func(t *testing.T) {
			if _, _, _, err := svc.CreateDomain(ctx, "acme", "a-b.dk", provision.DomainOptions{}, actor); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := svc.CreateDomain(ctx, "acme", "a.b.dk", provision.DomainOptions{}, actor)
			if !errors.Is(err, provision.ErrLabelClash) || !strings.Contains(err.Error(), "a-b.dk") {
				t.Errorf("err %v", err)
			}
		})
		t.Run("delete", func(t *testing.T) {
			if err := svc.DeleteDomain(ctx, "other", "spamtrap.dk", actor); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("another brand deleted it: %v", err)
			}
			if err := svc.DeleteBrand(ctx, "acme", actor); !errors.Is(err, keystore.ErrConflict) {
				t.Errorf("brand with domains deleted: %v", err)
			}
			if err := svc.DeleteDomain(ctx, "acme", "spamtrap.dk", actor); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Domain(ctx, "spamtrap.dk"); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("domain after delete: %v", err)
			}
			if keys, err := store.Keys(ctx, keystore.OwnerDomain, "spamtrap.dk"); err != nil || len(keys) != 0 {
				t.Errorf("keys after delete: %d, %v", len(keys), err)
			}
			if err := svc.DeleteDomain(ctx, "acme", "spamtrap.dk", actor); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("second delete: %v", err)
			}
		})
	})
}

func TestRotateSecret(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	ctx := context.Background()
	svc := provisiontest.Service(t, store, "oxcloud.zone", fixedNow)
	old, err := svc.CreateBrand(ctx, "acme", actor)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := svc.RotateSecret(ctx, "acme", actor)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.Brand(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := provision.VerifySecret(b.SecretHash, old); ok {
		t.Error("the old secret still works")
	}
	if ok, _ := provision.VerifySecret(b.SecretHash, fresh); !ok {
		t.Error("the new secret does not work")
	}
	if _, err := svc.RotateSecret(ctx, "nobody", actor); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("rotate unknown brand: %v", err)
	}
	if _, err := svc.CreateBrand(ctx, "Bad_Name", actor); err == nil {
		t.Error("invalid brand name accepted")
	}
}
