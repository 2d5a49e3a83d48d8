package zone

import (
	"context"
	"dkimd/internal/keystore"
	"log/slog"
	"runtime/debug"
	"time"
)

// Keeping the snapshot current: a full load, or the change journal applied
// incrementally (builder.go), on a kick from a commit, LISTEN (listen.go)
// or the periodic reconcile.

// recordEstimator is a Source that can say cheaply about how many records a
// full load will bring, so that the builder sizes its tables once.
type recordEstimator interface {
	ZoneRecordEstimate(ctx context.Context) (int, error)
}

// Source is what the zone reads from the store.
type Source interface {
	Serial(ctx context.Context) (uint32, error)
	// ZoneRecords streams every record; a record's PublicKey is valid
	// only until fn returns (the Postgres store reuses its read buffer).
	ZoneRecords(ctx context.Context, fn func(keystore.ZoneRecord) error) error
	OwnerZoneRecords(ctx context.Context, kind keystore.OwnerKind, owner string) ([]keystore.ZoneRecord, error)
	ZoneChangesSince(ctx context.Context, after, upTo uint32) ([]keystore.ZoneChange, error)
	ZoneJournalFloor(ctx context.Context) (floor uint32, ok bool, err error)
}

// Kick asks the update loop to catch up with the store; it never blocks.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// maxIncremental: beyond this many changed owners a full reload is cheaper.
const maxIncremental = 5000

// Sync brings the snapshot up to the store's serial: incrementally from the
// change journal where it can, else by a full reload.
func (s *Server) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	// Read the serial first: whatever is read afterwards is at least that
	// new, and anything newer comes with a higher serial and is applied by
	// the next Sync (applying an owner twice is harmless).
	serial, err := s.src.Serial(ctx)
	if err != nil {
		return err
	}
	cur := s.cur.Load()
	switch {
	case cur != nil && !s.stale && serial == cur.serial:
		return nil
	case cur == nil || s.stale:
		return s.fullLoad(ctx, serial)
	case serial < cur.serial:
		s.log.Error("the database's zone serial went backwards; reloading from it",
			slog.Uint64("serial", uint64(serial)), slog.Uint64("served_serial", uint64(cur.serial)))
		return s.fullLoad(ctx, serial)
	}
	// The journal is pruned (keystore.ZoneJournalKeep): a replica that fell
	// further behind than it reaches must reload everything.
	if floor, ok, err := s.src.ZoneJournalFloor(ctx); err != nil {
		return err
	} else if !ok || cur.serial+1 < floor {
		s.log.Warn("zone change journal does not reach back to the served serial; reloading the whole zone",
			slog.Uint64("served_serial", uint64(cur.serial)), slog.Uint64("journal_floor", uint64(floor)))
		return s.fullLoad(ctx, serial)
	}
	changes, err := s.src.ZoneChangesSince(ctx, cur.serial, serial)
	if err != nil {
		return err
	}
	if len(changes) > maxIncremental {
		return s.fullLoad(ctx, serial)
	}
	start := time.Now()
	s.stale = true // until the builder is consistent again
	if err := s.b.begin(serial, false); err != nil {
		s.m.failed.Inc()
		return err
	}
	// All removals first, then all additions: two owners whose names
	// coincide (a domain deleted and another with the same label created in
	// one batch) must end with the record that the store has.
	published := make([][]Record, len(changes))
	for i, c := range changes {
		recs, err := s.src.OwnerZoneRecords(ctx, c.Kind, c.Owner)
		if err != nil {
			s.m.failed.Inc()
			return err
		}
		for _, r := range recs {
			if rec, ok := RecordOf(r, s.opts.Params.Zone); ok {
				published[i] = append(published[i], rec)
			}
		}
		if err := s.b.removeOwner(c); err != nil {
			s.m.failed.Inc()
			return err
		}
	}
	for _, recs := range published {
		if err := s.b.publish(recs); err != nil {
			s.m.failed.Inc()
			return err
		}
	}
	s.stale = false
	s.recordDelta(cur.serial, serial, s.b.removed, s.b.added)
	s.publish(s.b.finish())
	s.m.incr.Inc()
	s.log.Debug("zone updated", slog.Uint64("serial", uint64(serial)), slog.Int("owners", len(changes)),
		slog.Duration("took", time.Since(start)))
	return nil
}

func (s *Server) fullLoad(ctx context.Context, serial uint32) error {
	start := time.Now()
	s.stale = true
	if err := s.b.begin(serial, true); err != nil {
		s.m.failed.Inc()
		return err
	}
	if e, ok := s.src.(recordEstimator); ok {
		n, err := e.ZoneRecordEstimate(ctx)
		if err != nil {
			// Only the tables' doublings are at stake.
			s.log.Warn("zone size estimate failed", slog.String("err", err.Error()))
		}
		if cur := s.cur.Load(); cur != nil {
			n = max(n, cur.records)
		}
		s.b.presize(n)
	}
	kr := &keyRenderer{}
	err := s.src.ZoneRecords(ctx, func(r keystore.ZoneRecord) error { return s.b.addKey(kr, r) })
	if err != nil {
		s.m.failed.Inc()
		return err
	}
	s.stale = false
	s.histMu.Lock()
	s.history = nil // a full load has no delta to the previous snapshot
	s.histMu.Unlock()
	snap := s.b.finish()
	s.publish(snap)
	s.m.full.Inc()
	if snap.records > 10000 {
		// A full load of a large zone leaves the previous snapshot (if any)
		// and the load's garbage behind (GB at a million domains); queries allocate
		// nothing, so without this the process would keep that memory.
		debug.FreeOSMemory()
	}
	s.log.Info("zone loaded", slog.Uint64("serial", uint64(serial)), slog.Int("records", snap.records),
		slog.Duration("took", time.Since(start)))
	return nil
}

func (s *Server) publish(snap *Snapshot) {
	old := s.cur.Swap(snap)
	s.m.records.Set(float64(snap.records))
	s.m.serial.Set(float64(snap.serial))
	if old == nil || old.serial != snap.serial {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

func (s *Server) updateLoop(ctx context.Context) {
	tick := time.NewTicker(s.opts.Reconcile)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		case <-retry:
		}
		retry = nil
		if err := s.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("zone update failed; serving the previous snapshot", slog.String("err", err.Error()), slog.Duration("retry_in", backoff))
			retry = time.After(backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}
