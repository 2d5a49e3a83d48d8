package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"dkimd/internal/ops"
)

// opsShutdownTimeout bounds how long in-flight scrapes and probes may finish
// after SIGTERM; they are short, so this is well inside any orchestrator's
// grace period (Kubernetes: 30 s).
const opsShutdownTimeout = 5 * time.Second

// readiness is where subsystems register what /readyz checks, e.g. the DNS
// server's "zone loaded": a.readiness().Register("zone", …). Checks may be
// registered after the ops listener started; each /readyz request runs the
// current set.
func (a *app) readiness() *ops.Readiness { return a.ready }

// startOps starts the ops listener (/metrics, /healthz, /readyz); it stops
// when ctx ends, letting in-flight requests finish within opsShutdownTimeout.
func (a *app) startOps(ctx context.Context, g *errgroup.Group) error {
	if err := ops.RegisterRuntime(a.registry, version, a.store.Dialect()); err != nil {
		return err
	}
	ready := a.readiness()
	ready.RegisterStore(a.store)
	if a.cfg.OpsAddr == "" {
		a.log.Info("ops listener disabled")
		return nil
	}
	// Listen here rather than in the goroutine so a taken port fails start-up
	// with a message naming the flag.
	ln, err := net.Listen("tcp", a.cfg.OpsAddr)
	if err != nil {
		return fmt.Errorf("--ops-addr: %w", err)
	}
	ln = a.retryAccept("ops", ln)
	srv := &http.Server{
		Handler:           ops.NewHandler(a.registry, ready, a.log),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.log.Info("ops listening", slog.String("addr", ln.Addr().String()))
	serveHTTP(ctx, g, "ops", srv, ln, opsShutdownTimeout)
	return nil
}
