package keystore

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leader decides which replica runs a singleton loop (rotation).
type Leader interface {
	// Acquire reports whether this replica holds leadership now, taking
	// it when it is free. Callers call it before every step, so that a
	// holder whose hold was lost stops before its next step.
	Acquire(ctx context.Context) (bool, error)
	// Close gives leadership up.
	Close() error
}

// leaderLockIDs are the Postgres advisory locks of named leaders, apart
// from the migration lock. "rotation" keeps the id replicas have always
// used ("dkimdr"), so that old and new replicas exclude each other during
// a rolling upgrade.
var leaderLockIDs = map[string]int64{"rotation": 0x646b696d6472}

// Leader returns the leader election called name. On Postgres it is a
// session-level advisory lock on a connection of its own: the lock lives
// exactly as long as that connection, so when the holder dies or its
// connection is cut, Postgres releases it and another replica's next
// Acquire takes it. On SQLite one process serves a data dir, so this
// process always leads.
func (s *SQL) Leader(name string) Leader {
	if s.dialect != Postgres {
		return solo{}
	}
	id, ok := leaderLockIDs[name]
	if !ok {
		h := fnv.New64a()
		h.Write([]byte("dkimd leader " + name))
		id = int64(h.Sum64() >> 1)
	}
	l := &pgLeader{url: s.url, id: id}
	s.leaders.add(l)
	return l
}

type solo struct{}

func (solo) Acquire(context.Context) (bool, error) { return true, nil }
func (solo) Close() error                          { return nil }

// leaders are the store's lock holders, released when the store closes.
type leaders struct {
	mu  sync.Mutex
	all []*pgLeader
}

func (ls *leaders) add(l *pgLeader) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.all = append(ls.all, l)
}

func (ls *leaders) close() {
	ls.mu.Lock()
	all := ls.all
	ls.all = nil
	ls.mu.Unlock()
	for _, l := range all {
		_ = l.Close() // closing a connection cannot fail in a way that keeps the lock
	}
}

type pgLeader struct {
	url string
	id  int64

	mu   sync.Mutex
	conn *pgx.Conn
	held bool
}

// Acquire checks that a held lock's connection is alive, or tries to take
// the lock.
func (l *pgLeader) Acquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if l.conn != nil && l.held {
		if err := l.conn.Ping(ctx); err == nil {
			return true, nil
		}
		l.dropLocked()
	}
	if l.conn == nil {
		conn, err := pgx.Connect(ctx, l.url)
		if err != nil {
			return false, fmt.Errorf("keystore: leader connection: %w", classify(err))
		}
		l.conn = conn
	}
	var ok bool
	if err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, l.id).Scan(&ok); err != nil {
		l.dropLocked()
		return false, fmt.Errorf("keystore: try advisory lock: %w", classify(err))
	}
	l.held = ok
	return ok, nil
}

// PID is the backend process id of the lock connection, 0 without one;
// tests use it to cut the connection.
func (l *pgLeader) PID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return 0
	}
	return l.conn.PgConn().PID()
}

func (l *pgLeader) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = l.conn.Close(ctx) // the connection is being abandoned; its lock dies with it
		cancel()
	}
	l.conn, l.held = nil, false
}

// Close releases the lock by closing its connection.
func (l *pgLeader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked()
	return nil
}
