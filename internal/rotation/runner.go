package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leader decides whether this replica runs the loop.
type Leader interface {
	// Acquire reports whether this replica holds leadership now, taking it
	// when it is free. It is called before every tick.
	Acquire(ctx context.Context) (bool, error)
	Close() error
}

// Solo is the leader of a single-process deployment (SQLite).
type Solo struct{}

// Acquire always holds.
func (Solo) Acquire(context.Context) (bool, error) { return true, nil }

// Close does nothing.
func (Solo) Close() error { return nil }

// LockID is the Postgres advisory lock of the rotation loop ("dkimdr"),
// apart from the migration lock.
const LockID int64 = 0x646b696d6472

// PGLeader holds a Postgres session-level advisory lock on a connection of
// its own. The lock lives exactly as long as that connection: when the
// holder dies or its connection is cut, Postgres releases it, and another
// replica's next Acquire takes it. A holder that finds its connection
// broken gives leadership up before the next step.
type PGLeader struct {
	url string
	id  int64

	mu   sync.Mutex
	conn *pgx.Conn
	held bool
}

// NewPGLeader competes for lock id on the database at url.
func NewPGLeader(url string, id int64) *PGLeader { return &PGLeader{url: url, id: id} }

// Acquire checks that a held lock's connection is alive, or tries to take
// the lock.
func (l *PGLeader) Acquire(ctx context.Context) (bool, error) {
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
			return false, fmt.Errorf("rotation: leader connection: %w", err)
		}
		l.conn = conn
	}
	var ok bool
	if err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, l.id).Scan(&ok); err != nil {
		l.dropLocked()
		return false, fmt.Errorf("rotation: try advisory lock: %w", err)
	}
	l.held = ok
	return ok, nil
}

// PID is the backend process id of the lock connection, 0 without one; tests
// use it to cut the connection.
func (l *PGLeader) PID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return 0
	}
	return l.conn.PgConn().PID()
}

func (l *PGLeader) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = l.conn.Close(ctx) // the connection is being abandoned; its lock dies with it
		cancel()
	}
	l.conn, l.held = nil, false
}

// Close releases the lock by closing its connection.
func (l *PGLeader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked()
	return nil
}

// Runner runs Step every Interval while its Leader holds.
type Runner struct {
	Service  *Service
	Leader   Leader
	Interval time.Duration // between ticks; also how often a follower tries the lock
	Log      *slog.Logger
}

// Run ticks until ctx ends, then gives leadership up.
func (r *Runner) Run(ctx context.Context) error {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer r.Leader.Close()
	defer r.Service.m.leader.Set(0)
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	leading := false
	for {
		held, err := r.Leader.Acquire(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("rotation leader election failed", slog.Any("error", err))
		}
		if held != leading {
			leading = held
			r.Service.m.leader.Set(boolGauge(held))
			log.Info("rotation leadership changed", slog.Bool("leader", held))
		}
		if held {
			if err := r.Service.Step(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("rotation step failed", slog.Any("error", err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
