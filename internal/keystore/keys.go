package keystore

import (
	"context"
	"errors"
	"fmt"
)

const keyColumns = `owner_kind, owner, selector, state, algorithm, key_bits, public_key, sealed_private_key, kek_id, fingerprint,
	created_at, published_at, activated_at, retired_at`

func scanKey(row interface{ Scan(...any) error }) (Key, error) {
	var k Key
	var kind, state string
	var created, published, activated, retired int64
	err := row.Scan(&kind, &k.Owner, &k.Selector, &state, &k.Algorithm, &k.KeyBits, &k.PublicKey, &k.SealedPrivateKey,
		&k.KEKID, &k.Fingerprint, &created, &published, &activated, &retired)
	if err != nil {
		return Key{}, err
	}
	k.OwnerKind, k.State = OwnerKind(kind), KeyState(state)
	k.CreatedAt, k.PublishedAt = fromMicros(created), fromMicros(published)
	k.ActivatedAt, k.RetiredAt = fromMicros(activated), fromMicros(retired)
	return k, nil
}

func (r reader) Keys(ctx context.Context, kind OwnerKind, owner string) ([]Key, error) {
	rows, err := r.q.QueryContext(ctx,
		`SELECT `+keyColumns+` FROM keys WHERE owner_kind = $1 AND owner = $2 ORDER BY selector`, string(kind), owner)
	if err != nil {
		return nil, fmt.Errorf("keystore: keys: %w", classify(err))
	}
	return collect(rows, scanKey, "keys")
}

func (r reader) BrandDomainKeys(ctx context.Context, brand, after, last string) (map[string][]Key, error) {
	rows, err := r.q.QueryContext(ctx,
		`SELECT k.owner_kind, k.owner, k.selector, k.state, k.algorithm, k.key_bits, k.public_key, k.sealed_private_key,
			k.kek_id, k.fingerprint, k.created_at, k.published_at, k.activated_at, k.retired_at
		FROM keys k JOIN domains d ON k.owner_kind = $1 AND k.owner = d.name
		WHERE d.brand = $2 AND d.name > $3 AND d.name <= $4
		ORDER BY k.owner, k.selector`, string(OwnerDomain), brand, after, last)
	if err != nil {
		return nil, fmt.Errorf("keystore: brand domain keys: %w", classify(err))
	}
	keys, err := collect(rows, scanKey, "brand domain keys")
	if err != nil {
		return nil, err
	}
	out := make(map[string][]Key)
	for _, k := range keys {
		out[k.Owner] = append(out[k.Owner], k)
	}
	return out, nil
}

func (t *txn) PutKey(ctx context.Context, k Key) error {
	if k.PublicKey == nil {
		k.PublicKey = []byte{} // a revoked key publishes "p=": empty, not NULL
	}
	_, err := t.q.ExecContext(ctx,
		`INSERT INTO keys (`+keyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (owner_kind, owner, selector) DO UPDATE SET
			state = excluded.state, algorithm = excluded.algorithm, key_bits = excluded.key_bits,
			public_key = excluded.public_key, sealed_private_key = excluded.sealed_private_key,
			kek_id = excluded.kek_id, fingerprint = excluded.fingerprint, created_at = excluded.created_at,
			published_at = excluded.published_at, activated_at = excluded.activated_at, retired_at = excluded.retired_at`,
		string(k.OwnerKind), k.Owner, k.Selector, string(k.State), k.Algorithm, k.KeyBits, k.PublicKey, k.SealedPrivateKey,
		k.KEKID, k.Fingerprint, micros(k.CreatedAt), micros(k.PublishedAt), micros(k.ActivatedAt), micros(k.RetiredAt))
	if err != nil {
		return fmt.Errorf("keystore: put key %s/%s: %w", k.Owner, k.Selector, classify(err))
	}
	t.zoneChanged(k.OwnerKind, k.Owner)
	return nil
}

func (t *txn) DeleteKeys(ctx context.Context, kind OwnerKind, owner string) error {
	res, err := t.q.ExecContext(ctx, `DELETE FROM keys WHERE owner_kind = $1 AND owner = $2`, string(kind), owner)
	if err != nil {
		return fmt.Errorf("keystore: delete keys of %s: %w", owner, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("keystore: delete keys of %s: %w", owner, classify(err))
	}
	if n > 0 {
		t.zoneChanged(kind, owner)
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
