package keystore

import (
	"context"
	"database/sql"
	"fmt"
)

// ZoneJournalKeep is how many serials of zone_changes the journal keeps:
// a replica that falls further behind than this reloads the whole zone.
// At a rotation every 180 days for a million domains (~5,500 changes a day,
// each its own serial) it is more than two weeks.
const ZoneJournalKeep = 100_000

// ZoneJournalFloor is the lowest serial the change journal still holds;
// ok is false when the journal is empty. Every raise of the serial journals
// at least one owner, so a replica at serial s can catch up incrementally
// only when s+1 >= floor; otherwise changes it needs were pruned.
func (r reader) ZoneJournalFloor(ctx context.Context) (floor uint32, ok bool, err error) {
	var v sql.NullInt64
	if err := r.q.QueryRowContext(ctx, `SELECT MIN(serial) FROM zone_changes`).Scan(&v); err != nil {
		return 0, false, fmt.Errorf("keystore: zone journal floor: %w", classify(err))
	}
	return uint32(v.Int64), v.Valid, nil
}

// PruneZoneJournal deletes journal entries more than keep serials below the
// current serial and returns how many it deleted.
func (s *SQL) PruneZoneJournal(ctx context.Context, keep uint32) (int64, error) {
	serial, err := s.Serial(ctx)
	if err != nil {
		return 0, err
	}
	if serial <= keep {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM zone_changes WHERE serial <= $1`, int64(serial-keep))
	if err != nil {
		return 0, fmt.Errorf("keystore: prune zone journal: %w", classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("keystore: prune zone journal: %w", err)
	}
	return n, nil
}
