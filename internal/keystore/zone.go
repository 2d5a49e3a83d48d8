package keystore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// ZoneRecord is one published key together with what names it in DNS: the
// domain's label for a domain key, the brand's name for a fallback key.
type ZoneRecord struct {
	Kind      OwnerKind
	Owner     string // domain name or brand name
	Label     string // the domain's label; empty for a brand key
	Selector  string
	State     KeyState
	Algorithm string
	PublicKey []byte // empty for a revoked key
}

// ZoneChange names an owner whose published records changed.
type ZoneChange struct {
	Kind  OwnerKind
	Owner string
}

// Every key is published, whatever its state (next, active, retiring and
// revoked); a domain key names its domain's label. The LEFT JOIN keeps brand
// keys, which have no domains row.
const zoneRecordQuery = `SELECT k.owner_kind, k.owner, COALESCE(d.label, ''), k.selector, k.state, k.algorithm, k.public_key
	FROM keys k LEFT JOIN domains d ON k.owner_kind = 'domain' AND d.name = k.owner`

func scanZoneRecord(row interface{ Scan(...any) error }) (ZoneRecord, error) {
	var r ZoneRecord
	var kind, state string
	if err := row.Scan(&kind, &r.Owner, &r.Label, &r.Selector, &state, &r.Algorithm, &r.PublicKey); err != nil {
		return ZoneRecord{}, err
	}
	r.Kind, r.State = OwnerKind(kind), KeyState(state)
	return r, nil
}

// ZoneRecords streams every published key to fn, without holding them all
// in memory at once. Read Serial before calling it: the records are then at
// least as new as that serial, and a change that lands meanwhile carries a
// higher serial that the caller will apply again. fn must not keep
// r.PublicKey after it returns (SQL.ZoneRecords on Postgres reuses it).
func (r reader) ZoneRecords(ctx context.Context, fn func(ZoneRecord) error) error {
	rows, err := r.q.QueryContext(ctx, zoneRecordQuery)
	if err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanZoneRecord(rows)
		if err != nil {
			return fmt.Errorf("keystore: zone records: %w", classify(err))
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	return nil
}

// zoneLoadWorkMem is Postgres's work_mem for the full zone query. The query
// hash-joins keys with domains, and the hash table holds every domain's name
// and label: about 80 MB at a million domains. At the default 4 MB it spills
// to disk in 16 batches, which made the query 6.7-9.6 s instead of 4.9 s at a
// million domains (EXPLAIN ANALYZE, docs/reliability.md). The memory is
// taken once per full load, per replica, and only while the query runs.
const zoneLoadWorkMem = "64MB" // doubled for hash tables by hash_mem_multiplier (default 2)

// ZoneRecords streams every published key to fn, as reader.ZoneRecords does;
// r.PublicKey is valid only until fn returns.
//
// On Postgres it is the start-up path of every replica (two million rows at
// a million domains), so it skips database/sql: pgx's own rows hand over
// each row's raw values, with no driver.Value and no copy per column. It
// runs in a read-only transaction that gives the query the memory its join
// needs and turns JIT off (its compile time, ~0.25 s, buys nothing for one
// sequential pass).
func (s *SQL) ZoneRecords(ctx context.Context, fn func(ZoneRecord) error) error {
	if s.dialect != Postgres {
		return s.reader.ZoneRecords(ctx, fn)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("keystore: zone records: unexpected driver connection %T", driverConn)
		}
		return pgxZoneRecords(ctx, c.Conn(), fn)
	})
}

func pgxZoneRecords(ctx context.Context, c *pgx.Conn, fn func(ZoneRecord) error) error {
	tx, err := c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // read-only: nothing to keep
	for _, set := range []string{"SET LOCAL work_mem = '" + zoneLoadWorkMem + "'", "SET LOCAL jit = off"} {
		if _, err := tx.Exec(ctx, set); err != nil {
			return fmt.Errorf("keystore: zone records: %w", classify(err))
		}
	}
	// Binary results: text columns arrive as their bytes and bytea as the
	// key itself (the text format would hex-encode it).
	rows, err := tx.Query(ctx, zoneRecordQuery, pgx.QueryResultFormats{pgx.BinaryFormatCode})
	if err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		v := rows.RawValues()
		if len(v) != 7 {
			return fmt.Errorf("keystore: zone records: %d columns, want 7", len(v))
		}
		r := ZoneRecord{Kind: OwnerKind(v[0]), Owner: string(v[1]), Label: string(v[2]), Selector: string(v[3]),
			State: KeyState(v[4]), Algorithm: string(v[5]), PublicKey: v[6]}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keystore: zone records: %w", classify(err))
	}
	return nil
}

// ZoneRecordEstimate is about how many records ZoneRecords will stream, for
// sizing: on Postgres the planner's row count of keys (kept by ANALYZE and
// autovacuum; 0 before the first), on SQLite an exact count.
func (s *SQL) ZoneRecordEstimate(ctx context.Context) (int, error) {
	q := `SELECT COUNT(*) FROM keys`
	if s.dialect == Postgres {
		q = `SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'keys'::regclass`
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("keystore: zone size: %w", classify(err))
	}
	return int(n), nil
}

// OwnerZoneRecords is the published keys of one owner, ordered by selector;
// none when the owner no longer exists.
func (r reader) OwnerZoneRecords(ctx context.Context, kind OwnerKind, owner string) ([]ZoneRecord, error) {
	rows, err := r.q.QueryContext(ctx, zoneRecordQuery+` WHERE k.owner_kind = $1 AND k.owner = $2 ORDER BY k.selector`,
		string(kind), owner)
	if err != nil {
		return nil, fmt.Errorf("keystore: owner zone records: %w", classify(err))
	}
	return collect(rows, scanZoneRecord, "owner zone records")
}

// ZoneChangesSince lists, once each, the owners whose records changed in
// serials after `after` up to and including `upTo`. Serials are raised under
// the zone_serial row lock until commit, so once Serial reads upTo every
// change up to it is visible.
func (r reader) ZoneChangesSince(ctx context.Context, after, upTo uint32) ([]ZoneChange, error) {
	rows, err := r.q.QueryContext(ctx,
		`SELECT DISTINCT owner_kind, owner FROM zone_changes WHERE serial > $1 AND serial <= $2 ORDER BY owner_kind, owner`,
		int64(after), int64(upTo))
	if err != nil {
		return nil, fmt.Errorf("keystore: zone changes: %w", classify(err))
	}
	return collect(rows, func(row interface{ Scan(...any) error }) (ZoneChange, error) {
		var c ZoneChange
		var kind string
		err := row.Scan(&kind, &c.Owner)
		c.Kind = OwnerKind(kind)
		return c, err
	}, "zone changes")
}
