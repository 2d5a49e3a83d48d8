package keystore

import (
	"context"
	"fmt"
)

// MaxAuditPage bounds one page of the audit log.
const MaxAuditPage = 1000

const auditColumns = `id, at, actor, action, brand, domain, selector, fingerprint, request_id, detail`

func (t *txn) AppendAudit(ctx context.Context, r AuditRecord) error {
	_, err := t.q.ExecContext(ctx,
		`INSERT INTO audit_log (at, actor, action, brand, domain, selector, fingerprint, request_id, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		micros(r.At), r.Actor, r.Action, r.Brand, r.Domain, r.Selector, r.Fingerprint, r.RequestID, r.Detail)
	if err != nil {
		return fmt.Errorf("keystore: append audit: %w", classify(err))
	}
	return nil
}

func (r reader) Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	if f.Limit <= 0 || f.Limit > MaxAuditPage {
		f.Limit = MaxAuditPage
	}
	before := f.BeforeID
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := r.q.QueryContext(ctx,
		`SELECT `+auditColumns+` FROM audit_log
		WHERE id < $1 AND ($2 = '' OR brand = $2) AND ($3 = '' OR domain = $3)
		ORDER BY id DESC LIMIT $4`, before, f.Brand, f.Domain, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("keystore: audit: %w", classify(err))
	}
	return collect(rows, func(row interface{ Scan(...any) error }) (AuditRecord, error) {
		var a AuditRecord
		var at int64
		err := row.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Brand, &a.Domain, &a.Selector, &a.Fingerprint, &a.RequestID, &a.Detail)
		a.At = fromMicros(at)
		return a, err
	}, "audit")
}
