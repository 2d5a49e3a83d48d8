package httpapi

import (
	"errors"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestAdminRemoveMaildomainWithKeys: the admin API refuses, as the CLI
// does, to unregister a maildomain whose DKIM keys are still published,
// naming its selectors and changing nothing; ?force=true deletes the keys
// first, in the same transaction.
func TestAdminRemoveMaildomainWithKeys(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		e.brand("acme", "spamtrap.dk")
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), 201)
		serial, err := store.Serial(t.Context())
		if err != nil {
			t.Fatal(err)
		}

		wantError(t, e.admin("DELETE", "/brands/acme/maildomains/spamtrap.dk", ""), 409, "MAILDOMAIN_HAS_KEYS",
			"maildomain spamtrap.dk holds DKIM keys (selector1, selector2); delete them first, or remove with ?force=true")
		if ok, err := store.IsMaildomain(t.Context(), "acme", "spamtrap.dk"); err != nil || !ok {
			t.Fatalf("refused removal changed the maildomain: %v %v", ok, err)
		}
		if now, _ := store.Serial(t.Context()); now != serial {
			t.Fatalf("refused removal changed the zone: serial %d -> %d", serial, now)
		}

		wantStatus(t, e.admin("DELETE", "/brands/acme/maildomains/spamtrap.dk?force=true", ""), 204)
		if _, err := store.Domain(t.Context(), "spamtrap.dk"); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("domain after forced removal: %v", err)
		}
		if keys, err := store.Keys(t.Context(), keystore.OwnerDomain, "spamtrap.dk"); err != nil || len(keys) != 0 {
			t.Errorf("keys after forced removal: %d, %v", len(keys), err)
		}
		if ok, _ := store.IsMaildomain(t.Context(), "acme", "spamtrap.dk"); ok {
			t.Error("still a maildomain after forced removal")
		}
		recs, err := store.Audit(t.Context(), keystore.AuditFilter{Domain: "spamtrap.dk", Limit: 10})
		if err != nil || len(recs) < 2 || recs[0].Action != "maildomain.remove" || recs[1].Action != "domain.delete" {
			t.Errorf("audit after forced removal: %+v, %v", recs, err)
		}
	})
}
