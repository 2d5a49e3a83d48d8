package keystore

import (
	"context"
	"fmt"
)

// EachMaildomain calls fn with every (maildomain, brand) pair, in no
// particular order (no sort on the database), streaming the rows rather than
// collecting them: the
// signer builds its outage directory from it (docs/reliability.md,
// "Faults": signing keeps serving from memory while the database is away),
// and there may be a million maildomains. An error from fn stops the scan and
// is returned as it is.
func (r reader) EachMaildomain(ctx context.Context, fn func(domain, brand string) error) error {
	rows, err := r.q.QueryContext(ctx, `SELECT domain, brand FROM maildomains`)
	if err != nil {
		return fmt.Errorf("keystore: each maildomain: %w", classify(err))
	}
	defer rows.Close()
	var domain, brand string
	for rows.Next() {
		if err := rows.Scan(&domain, &brand); err != nil {
			return fmt.Errorf("keystore: each maildomain: %w", classify(err))
		}
		if err := fn(domain, brand); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keystore: each maildomain: %w", classify(err))
	}
	return nil
}
