package keystore_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestKEKIDs: the ids come from the keys that still hold a sealed private
// key, each once, sorted; destroyed keys and keys without a private part
// (the DNS benchmark's) do not count.
func TestKEKIDs(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		ids, err := s.KEKIDs(ctx)
		if err != nil || len(ids) != 0 {
			t.Fatalf("empty store: %v, %v", ids, err)
		}
		seedBrand(t, s, "acme")
		mustUpdate(t, s, func(tx keystore.Tx) error {
			for i, kek := range []string{"k2", "k1", "k2", "k3", "k9"} {
				k := key("d.example", "selector"+string(rune('1'+i)), keystore.StateNext)
				k.OwnerKind, k.Owner, k.KEKID = keystore.OwnerBrand, "acme", kek
				switch kek {
				case "k3": // destroyed: nothing left to open
					k.SealedPrivateKey = nil
				}
				if err := tx.PutKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		})
		// k9's key is destroyed by replacing its slot with a revoked one.
		mustUpdate(t, s, func(tx keystore.Tx) error {
			k := key("d.example", "selector5", keystore.StateRevoked)
			k.OwnerKind, k.Owner, k.KEKID, k.SealedPrivateKey = keystore.OwnerBrand, "acme", "k9", nil
			return tx.PutKey(ctx, k)
		})
		ids, err = s.KEKIDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"k1", "k2"}; !reflect.DeepEqual(ids, want) {
			t.Fatalf("KEKIDs = %q, want %q", ids, want)
		}
	})
}

// TestKEKIDsBeforeMigrating: a database nothing was migrated into has no
// keys, so serve can check its KEK before it changes the schema.
func TestKEKIDsBeforeMigrating(t *testing.T) {
	ctx := context.Background()
	for _, dialect := range []string{keystore.SQLite, keystore.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			var s *keystore.SQL
			var err error
			if dialect == keystore.SQLite {
				s, err = keystore.OpenSQLite(t.TempDir())
			} else {
				s, err = keystore.OpenPostgres(ctx, keystoretest.PostgresURL(t))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if ids, err := s.KEKIDs(ctx); err != nil || len(ids) != 0 {
				t.Fatalf("KEKIDs of an empty database: %q, %v", ids, err)
			}
		})
	}
}

// TestKEKIDsUseTheIndex: the query must not read every key, or each CLI call
// would scan millions of rows on a large store.
func TestKEKIDsUseTheIndex(t *testing.T) {
	s := keystoretest.Open(t, keystore.SQLite)
	rows, err := s.DB().QueryContext(context.Background(),
		`EXPLAIN QUERY PLAN SELECT MIN(kek_id) FROM keys WHERE sealed_private_key IS NOT NULL AND kek_id > 'k'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(plan, "; "); !strings.Contains(p, "keys_kek_id") {
		t.Fatalf("plan %q does not use keys_kek_id", p)
	}
}
