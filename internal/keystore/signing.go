package keystore

import (
	"context"
	"fmt"
)

// MaildomainBrands lists, ordered by name, the brands that have domain as a
// maildomain. The signer uses it to find the brand whose fallback key signs
// mail from a domain that holds no active key of its own.
func (r reader) MaildomainBrands(ctx context.Context, domain string) ([]string, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT brand FROM maildomains WHERE domain = $1 ORDER BY brand`, domain)
	if err != nil {
		return nil, fmt.Errorf("keystore: maildomain brands: %w", classify(err))
	}
	return collect(rows, func(row interface{ Scan(...any) error }) (string, error) {
		var b string
		return b, row.Scan(&b)
	}, "maildomain brands")
}
