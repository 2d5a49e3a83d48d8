package keystore

import (
	"context"
	"fmt"
	"time"
)

func (r reader) IsMaildomain(ctx context.Context, brand, domain string) (bool, error) {
	var n int
	err := r.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM maildomains WHERE brand = $1 AND domain = $2`, brand, domain).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("keystore: is maildomain: %w", classify(err))
	}
	return n > 0, nil
}

func (r reader) Maildomains(ctx context.Context, brand string) ([]string, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT domain FROM maildomains WHERE brand = $1 ORDER BY domain`, brand)
	if err != nil {
		return nil, fmt.Errorf("keystore: maildomains: %w", classify(err))
	}
	return collect(rows, func(row interface{ Scan(...any) error }) (string, error) {
		var d string
		return d, row.Scan(&d)
	}, "maildomains")
}

func (t *txn) AddMaildomain(ctx context.Context, brand, domain string) error {
	_, err := t.q.ExecContext(ctx, `INSERT INTO maildomains (brand, domain, created_at) VALUES ($1, $2, $3)`,
		brand, domain, time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("keystore: add maildomain %q: %w", domain, classify(err))
	}
	return nil
}

func (t *txn) RemoveMaildomain(ctx context.Context, brand, domain string) error {
	return expectOne(t.q.ExecContext(ctx, `DELETE FROM maildomains WHERE brand = $1 AND domain = $2`, brand, domain))("remove maildomain " + domain)
}
