package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const brandColumns = `name, secret_hash, rotation_interval_seconds, created_at, updated_at`

func scanBrand(row interface{ Scan(...any) error }) (Brand, error) {
	var b Brand
	var interval, created, updated int64
	if err := row.Scan(&b.Name, &b.SecretHash, &interval, &created, &updated); err != nil {
		return Brand{}, err
	}
	b.RotationInterval = time.Duration(interval) * time.Second
	b.CreatedAt, b.UpdatedAt = fromMicros(created), fromMicros(updated)
	return b, nil
}

func (r reader) Brand(ctx context.Context, name string) (Brand, error) {
	b, err := scanBrand(r.q.QueryRowContext(ctx, `SELECT `+brandColumns+` FROM brands WHERE name = $1`, name))
	if err != nil {
		return Brand{}, fmt.Errorf("keystore: brand %q: %w", name, classify(err))
	}
	return b, nil
}

func (r reader) Brands(ctx context.Context) ([]Brand, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT `+brandColumns+` FROM brands ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("keystore: brands: %w", classify(err))
	}
	return collect(rows, scanBrand, "brands")
}

func (t *txn) CreateBrand(ctx context.Context, b Brand) (Brand, error) {
	out, err := scanBrand(t.q.QueryRowContext(ctx,
		`INSERT INTO brands (`+brandColumns+`) VALUES ($1, $2, $3, $4, $5) RETURNING `+brandColumns,
		b.Name, b.SecretHash, int64(b.RotationInterval/time.Second), micros(b.CreatedAt), micros(b.UpdatedAt)))
	if err != nil {
		return Brand{}, fmt.Errorf("keystore: create brand %q: %w", b.Name, classify(err))
	}
	return out, nil
}

func (t *txn) UpdateBrand(ctx context.Context, b Brand) (Brand, error) {
	out, err := scanBrand(t.q.QueryRowContext(ctx,
		`UPDATE brands SET secret_hash = $2, rotation_interval_seconds = $3, updated_at = $4 WHERE name = $1 RETURNING `+brandColumns,
		b.Name, b.SecretHash, int64(b.RotationInterval/time.Second), micros(b.UpdatedAt)))
	if err != nil {
		return Brand{}, fmt.Errorf("keystore: update brand %q: %w", b.Name, classify(err))
	}
	return out, nil
}

func (t *txn) DeleteBrand(ctx context.Context, name string) error {
	n, err := t.CountDomains(ctx, name)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("keystore: delete brand %q: %w: it still holds %d domains", name, ErrConflict, n)
	}
	if err := t.DeleteKeys(ctx, OwnerBrand, name); err != nil {
		return err
	}
	return expectOne(t.q.ExecContext(ctx, `DELETE FROM brands WHERE name = $1`, name))("delete brand " + name)
}

// expectOne turns "no row affected" into ErrNotFound.
func expectOne(res sql.Result, err error) func(what string) error {
	return func(what string) error {
		if err != nil {
			return fmt.Errorf("keystore: %s: %w", what, classify(err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("keystore: %s: %w", what, err)
		}
		if n == 0 {
			return fmt.Errorf("keystore: %s: %w", what, ErrNotFound)
		}
		return nil
	}
}

// collect scans every row and checks the iteration error too.
func collect[T any](rows *sql.Rows, scan func(interface{ Scan(...any) error }) (T, error), what string) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", what, classify(err))
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", what, classify(err))
	}
	return out, nil
}
