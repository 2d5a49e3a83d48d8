package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sync/errgroup"

	"dkimd/internal/milter"
)

// startMilter starts the milter listener (Postfix smtpd_milters /
// non_smtpd_milters, see deploy/postfix/main.cf.snippet) with its session
// bounds (--milter-timeout, --milter-max-conns) and its answer to mail it
// cannot sign (--milter-on-error); it stops when ctx ends. Messages in flight when it stops are the MTA's to retry or pass, per
// its milter_default_action.
func (a *app) startMilter(ctx context.Context, g *errgroup.Group) error {
	if a.cfg.MilterAddr == "" {
		a.log.Info("milter listener disabled")
		return nil
	}
	s, err := a.sharedSigner(ctx, g)
	if err != nil {
		return err
	}
	m, err := milter.New(milter.Options{Signer: s, Log: a.log.With(slog.String("component", "milter")), Registerer: a.registry,
		IdleTimeout: a.cfg.MilterTimeout, MaxConns: a.cfg.MilterMaxConns, OnError: a.cfg.MilterOnError})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.MilterAddr)
	if err != nil {
		return fmt.Errorf("--milter-addr: %w", err)
	}
	ln = a.retryAccept("milter", ln)
	a.log.Info("milter listening", slog.String("addr", ln.Addr().String()), slog.Duration("timeout", a.cfg.MilterTimeout),
		slog.Int("max_conns", a.cfg.MilterMaxConns), slog.String("on_error", a.cfg.MilterOnError))
	g.Go(func() error {
		if err := m.Serve(ln); err != nil && ctx.Err() == nil {
			return fmt.Errorf("milter listener: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		if err := m.Close(); err != nil {
			a.log.Warn("milter listener did not close cleanly", slog.String("err", err.Error()))
		}
		return nil
	})
	return nil
}
