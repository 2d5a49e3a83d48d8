package rotation

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Leader decides whether this replica runs the loop: the store's leader
// election (keystore.SQL.Leader).
type Leader interface {
	// Acquire reports whether this replica holds leadership now, taking it
	// when it is free. It is called before every tick.
	Acquire(ctx context.Context) (bool, error)
	Close() error
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
			log.Warn("rotation leader election failed", slog.Any("err", err))
		}
		if held != leading {
			leading = held
			r.Service.m.leader.Set(boolGauge(held))
			log.Info("rotation leadership changed", slog.Bool("leader", held))
		}
		if held {
			if err := r.Service.Step(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("rotation step failed", slog.Any("err", err))
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
