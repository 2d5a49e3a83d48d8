package keystore

import (
	"context"
	"fmt"
	"time"
)

// The reads below serve the rotation loop: which domains need a look now,
// which keys have served their retire grace, and the totals behind the
// rotation gauges. They are on reader so that Store and Tx both have them.

// DueDomains lists up to limit domains whose next look by the rotation loop
// is due at now. The loop keeps next_check_at at or before the domain's next
// rotation, pending switch and retire-grace end, so this one column is the
// whole schedule. Domains never checked come first, so that a new domain's
// first check is not queued behind a backlog of settled ones.
func (r reader) DueDomains(ctx context.Context, now time.Time, limit int) ([]Domain, error) {
	us := micros(now)
	rows, err := r.q.QueryContext(ctx, `SELECT `+domainColumns+` FROM domains
		WHERE next_check_at <= $1
		ORDER BY CASE WHEN last_checked_at = 0 THEN 0 ELSE 1 END, next_check_at, name
		LIMIT $2`, us, limit)
	if err != nil {
		return nil, fmt.Errorf("keystore: due domains: %w", classify(err))
	}
	return collect(rows, scanDomain, "due domains")
}

// RetiredKeys lists up to limit retiring or revoked keys of every owner
// retired at or before `before`.
func (r reader) RetiredKeys(ctx context.Context, before time.Time, limit int) ([]Key, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys
		WHERE state IN ('retiring', 'revoked') AND retired_at <= $1
		ORDER BY retired_at, owner_kind, owner, selector LIMIT $2`, micros(before), limit)
	if err != nil {
		return nil, fmt.Errorf("keystore: retired keys: %w", classify(err))
	}
	return collect(rows, scanKey, "retired keys")
}

// DomainStatusCounts counts domains by status.
func (r reader) DomainStatusCounts(ctx context.Context) (map[string]int, error) {
	return r.groupCounts(ctx, `SELECT status, COUNT(*) FROM domains GROUP BY status`, "domain status counts")
}

// KeyStateCounts counts keys of every owner by state.
func (r reader) KeyStateCounts(ctx context.Context) (map[KeyState]int, error) {
	counts, err := r.groupCounts(ctx, `SELECT state, COUNT(*) FROM keys GROUP BY state`, "key state counts")
	if err != nil {
		return nil, err
	}
	out := make(map[KeyState]int, len(counts))
	for k, n := range counts {
		out[KeyState(k)] = n
	}
	return out, nil
}

// groupCounts runs a "SELECT key, COUNT(*) … GROUP BY key" query.
func (r reader) groupCounts(ctx context.Context, query, what string) (map[string]int, error) {
	rows, err := r.q.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", what, classify(err))
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", what, classify(err))
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", what, classify(err))
	}
	return out, nil
}

// OldestActiveKeyPublishedAt is the publication time of the oldest active
// key of any owner; the zero time when there is none.
func (r reader) OldestActiveKeyPublishedAt(ctx context.Context) (time.Time, error) {
	var us int64
	err := r.q.QueryRowContext(ctx, `SELECT COALESCE(MIN(published_at), 0) FROM keys WHERE state = 'active'`).Scan(&us)
	if err != nil {
		return time.Time{}, fmt.Errorf("keystore: oldest active key: %w", classify(err))
	}
	return fromMicros(us), nil
}
