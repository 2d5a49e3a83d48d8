package keystore

import (
	"context"
	"database/sql"
	"log/slog"
	"time"
)

// sqlitePollEvery is how often an embedded store looks for commits made by
// another process on the same file: the CLI beside a running serve (docs/operator-guide.md,
// "Brands and maildomains": their changes reach DNS as any write does). The
// check is one PRAGMA on a connection of its own.
const sqlitePollEvery = 250 * time.Millisecond

// pollLoop is the embedded store's counterpart of the Postgres listener.
// PRAGMA data_version changes, on one connection, whenever another
// connection commits (https://sqlite.org/pragma.html#pragma_data_version);
// when it has and the zone serial moved, the watchers are told. This
// process's own commits move it too, so they are told a second time, which
// costs them a reread that finds nothing new.
func (s *SQL) pollLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	var conn *sql.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var version int64
	var serial uint32
	tick := time.NewTicker(sqlitePollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if conn == nil {
			c, err := s.db.Conn(ctx)
			if err != nil {
				continue
			}
			conn = c
			if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&version); err != nil {
				conn.Close()
				conn = nil
				continue
			}
			if serial, err = s.Serial(ctx); err != nil {
				s.log.Debug("zone change poll: serial", slog.String("err", err.Error()))
			}
			// As the Postgres listener does after it connects: a commit
			// between Watch and this first look would otherwise be missed.
			s.watch.notify()
			continue
		}
		var v int64
		if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
			if ctx.Err() == nil {
				s.log.Debug("zone change poll", slog.String("err", err.Error()))
			}
			conn.Close()
			conn = nil
			continue
		}
		if v == version {
			continue
		}
		version = v
		now, err := s.Serial(ctx)
		if err != nil || now == serial {
			continue
		}
		serial = now
		s.watch.notify()
	}
}
