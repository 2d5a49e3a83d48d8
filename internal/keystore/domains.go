package keystore

import (
	"context"
	"fmt"
)

const domainColumns = `name, label, brand, status, status_reason, active_selector, key_bits, ed25519, version,
	created_at, updated_at, last_rotated_at, next_rotation_at, pending_switch_at, last_checked_at, next_check_at, check_failures`

func scanDomain(row interface{ Scan(...any) error }) (Domain, error) {
	var d Domain
	var created, updated, lastRot, nextRot, pending, lastCheck, nextCheck int64
	err := row.Scan(&d.Name, &d.Label, &d.Brand, &d.Status, &d.StatusReason, &d.ActiveSelector, &d.KeyBits, &d.Ed25519, &d.Version,
		&created, &updated, &lastRot, &nextRot, &pending, &lastCheck, &nextCheck, &d.CheckFailures)
	if err != nil {
		return Domain{}, err
	}
	d.CreatedAt, d.UpdatedAt = fromMicros(created), fromMicros(updated)
	d.LastRotatedAt, d.NextRotationAt, d.PendingSwitchAt = fromMicros(lastRot), fromMicros(nextRot), fromMicros(pending)
	d.LastCheckedAt, d.NextCheckAt = fromMicros(lastCheck), fromMicros(nextCheck)
	return d, nil
}

func domainArgs(d Domain) []any {
	return []any{d.Name, d.Label, d.Brand, d.Status, d.StatusReason, d.ActiveSelector, d.KeyBits, d.Ed25519, d.Version,
		micros(d.CreatedAt), micros(d.UpdatedAt), micros(d.LastRotatedAt), micros(d.NextRotationAt), micros(d.PendingSwitchAt),
		micros(d.LastCheckedAt), micros(d.NextCheckAt), d.CheckFailures}
}

func (r reader) Domain(ctx context.Context, name string) (Domain, error) {
	d, err := scanDomain(r.q.QueryRowContext(ctx, `SELECT `+domainColumns+` FROM domains WHERE name = $1`, name))
	if err != nil {
		return Domain{}, fmt.Errorf("keystore: domain %q: %w", name, classify(err))
	}
	return d, nil
}

func (r reader) DomainByLabel(ctx context.Context, label string) (Domain, error) {
	d, err := scanDomain(r.q.QueryRowContext(ctx, `SELECT `+domainColumns+` FROM domains WHERE label = $1`, label))
	if err != nil {
		return Domain{}, fmt.Errorf("keystore: domain by label %q: %w", label, classify(err))
	}
	return d, nil
}

func (r reader) Domains(ctx context.Context, brand, after string, limit int) ([]Domain, error) {
	rows, err := r.q.QueryContext(ctx,
		`SELECT `+domainColumns+` FROM domains WHERE brand = $1 AND name > $2 ORDER BY name LIMIT $3`, brand, after, limit)
	if err != nil {
		return nil, fmt.Errorf("keystore: domains: %w", classify(err))
	}
	return collect(rows, scanDomain, "domains")
}

func (r reader) CountDomains(ctx context.Context, brand string) (int, error) {
	var n int
	if err := r.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM domains WHERE brand = $1`, brand).Scan(&n); err != nil {
		return 0, fmt.Errorf("keystore: count domains: %w", classify(err))
	}
	return n, nil
}

func (t *txn) CreateDomain(ctx context.Context, d Domain) (Domain, error) {
	d.Version = 1
	out, err := scanDomain(t.q.QueryRowContext(ctx,
		`INSERT INTO domains (`+domainColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		RETURNING `+domainColumns, domainArgs(d)...))
	if err != nil {
		return Domain{}, fmt.Errorf("keystore: create domain %q: %w", d.Name, classify(err))
	}
	return out, nil
}

func (t *txn) UpdateDomain(ctx context.Context, d Domain) (Domain, error) {
	out, err := scanDomain(t.q.QueryRowContext(ctx,
		`UPDATE domains SET status = $4, status_reason = $5, active_selector = $6, key_bits = $7, ed25519 = $8, version = version + 1,
			updated_at = $11, last_rotated_at = $12, next_rotation_at = $13, pending_switch_at = $14,
			last_checked_at = $15, next_check_at = $16, check_failures = $17
		WHERE name = $1 AND label = $2 AND brand = $3 AND version = $9 AND created_at = $10
		RETURNING `+domainColumns, domainArgs(d)...))
	if err != nil {
		err = classify(err)
		if isNotFound(err) {
			// Either gone or changed since it was read: tell which.
			if _, getErr := t.Domain(ctx, d.Name); getErr == nil {
				return Domain{}, fmt.Errorf("keystore: update domain %q: %w", d.Name, ErrStale)
			}
		}
		return Domain{}, fmt.Errorf("keystore: update domain %q: %w", d.Name, err)
	}
	return out, nil
}

func (t *txn) DeleteDomain(ctx context.Context, name string) error {
	if err := t.DeleteKeys(ctx, OwnerDomain, name); err != nil {
		return err
	}
	return expectOne(t.q.ExecContext(ctx, `DELETE FROM domains WHERE name = $1`, name))("delete domain " + name)
}
