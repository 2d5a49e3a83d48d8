package keystore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Watch calls fn after every commit that changed the zone: in this process
// on either dialect, before Update returns (so that a caller who wrote a
// key signs and answers with it at once), on Postgres after a commit of
// any replica sharing the database (LISTEN on ZoneChannel), and on SQLite
// within sqlitePollEvery of a commit by another process (pollLoop). It is also
// called after every (re)connection of the Postgres listener, because
// changes may have been missed while it was down. fn tells a consumer to
// reread what it needs from the store; it must return quickly and never
// block (the zone's Kick and the signer's Invalidate only set a flag).
// Watching ends when ctx ends or the store is closed.
//
// One listener connection serves every watcher of a store, with one
// reconnect loop: the zone, the signer and whoever comes next consume the
// same notifications.
func (s *SQL) Watch(ctx context.Context, fn func()) {
	w := &s.watch
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.next++
	id := w.next
	w.subs[id] = fn
	if w.stop == nil {
		lctx, cancel := context.WithCancel(context.Background())
		w.stop, w.done = cancel, make(chan struct{})
		if s.dialect == Postgres {
			go s.listenLoop(lctx, w.done)
		} else {
			// Commits of another process on the same file: the CLI.
			go s.pollLoop(lctx, w.done)
		}
	}
	w.mu.Unlock()
	context.AfterFunc(ctx, func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	})
}

// watchers are the callbacks of Watch.
type watchers struct {
	mu     sync.Mutex
	subs   map[int]func()
	next   int
	closed bool
	stop   context.CancelFunc // ends the Postgres listener or the SQLite poll, once started
	done   chan struct{}      // closed when that loop has ended
}

func newWatchers() watchers { return watchers{subs: map[int]func(){}} }

// notify calls every watcher.
func (w *watchers) notify() {
	w.mu.Lock()
	fns := make([]func(), 0, len(w.subs))
	for _, fn := range w.subs {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// close ends the listener and forgets every watcher.
func (w *watchers) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	clear(w.subs)
	stop, done := w.stop, w.done
	w.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// listenLoop holds a dedicated Postgres connection that LISTENs for zone
// changes committed by any replica, reconnecting with back-off. Each
// (re)connect notifies the watchers, who catch up with whatever was missed
// while the connection was down.
func (s *SQL) listenLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("zone change listener lost its connection; reconnecting",
			slog.String("err", err.Error()), slog.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *SQL) listenOnce(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+ZoneChannel); err != nil {
		return err
	}
	s.watch.notify()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.watch.notify()
	}
}
