package main

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"dkimd/internal/rotation"
)

// rotationTick is how often the loop runs and a follower retries the
// advisory lock: a new domain's first check comes within one tick of its
// PUT, and a dead leader's lock is taken over within a tick of Postgres
// noticing the dead connection. With a publish lead time of seconds (tests
// that kill dkimd in the middle of rotations) the tick shrinks with it.
func rotationTick(lead time.Duration) time.Duration {
	return max(10*time.Millisecond, min(5*time.Second, lead/4))
}

// startRotation starts the rotation part of serve; each listener or loop stops when ctx ends.
func (a *app) startRotation(ctx context.Context, g *errgroup.Group) error {
	checker, err := rotation.NewChecker(a.cfg.Resolver, a.cfg.Zone)
	if err != nil {
		return err
	}
	svc, err := rotation.New(a.store, a.svc, checker, rotation.Config{
		PublishLeadTime:  a.cfg.PublishLeadTime,
		RotationInterval: a.cfg.RotationInterval,
		RetireGrace:      a.cfg.RetireGrace,
	}, a.now, a.log.With(slog.String("component", "rotation")), a.registry)
	if err != nil {
		return err
	}
	a.setAPIRotator(svc)
	r := &rotation.Runner{Service: svc, Leader: a.store.Leader("rotation"), Interval: rotationTick(a.cfg.PublishLeadTime), Log: a.log.With(slog.String("component", "rotation"))}
	g.Go(func() error { return r.Run(ctx) })
	return nil
}
