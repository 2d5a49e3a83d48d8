package keystore

import (
	"context"
	"fmt"
)

// KEKIDs lists, sorted, the ids of the key-encryption keys under which the
// store's private keys are sealed: the distinct kek_id of every key that
// still holds a sealed private key. A store without such keys has none, and
// then any KEK may seal its first keys (docs/decisions.md, "The store's KEK
// ids come from its ciphertexts").
//
// The recursive query jumps from one id to the next through the keys_kek_id
// index, so it reads a few index entries per id rather than every key.
//
// A database without the keys table (nothing migrated yet) has no keys, so
// that serve can check its KEK before it migrates anything.
func (r reader) KEKIDs(ctx context.Context) ([]string, error) {
	exists := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'keys'`
	if r.dialect == Postgres {
		exists = `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'keys'`
	}
	var n int
	if err := r.q.QueryRowContext(ctx, exists).Scan(&n); err != nil {
		return nil, fmt.Errorf("keystore: kek ids: %w", classify(err))
	}
	if n == 0 {
		return nil, nil
	}
	rows, err := r.q.QueryContext(ctx, `
		WITH RECURSIVE ids(id) AS (
			SELECT MIN(kek_id) FROM keys WHERE sealed_private_key IS NOT NULL
			UNION ALL
			SELECT (SELECT MIN(kek_id) FROM keys WHERE sealed_private_key IS NOT NULL AND kek_id > ids.id)
			FROM ids WHERE ids.id IS NOT NULL
		)
		SELECT id FROM ids WHERE id IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("keystore: kek ids: %w", classify(err))
	}
	return collect(rows, func(row interface{ Scan(...any) error }) (string, error) {
		var id string
		return id, row.Scan(&id)
	}, "kek ids")
}
