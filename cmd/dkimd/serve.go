package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/config"
	"dkimd/internal/httpapi"
	"dkimd/internal/keystore"
	"dkimd/internal/ops"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
	"dkimd/internal/signer"
)

// app is what the listeners and loops of `dkimd serve` share.
type app struct {
	cfg      config.Config
	log      *slog.Logger
	store    *keystore.SQL
	box      *sealbox.Box
	svc      *provision.Service
	registry *prometheus.Registry
	now      func() time.Time

	api    *httpapi.Server // set by startAPI; rotation plugs into it
	signer *signer.Signer  // the one of the process, see sharedSigner
	ready  *ops.Readiness  // what /readyz checks; subsystems register theirs

	operatorToken string // the admin API's bearer token, loaded or generated before any listener starts
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// serve runs every listener and loop until ctx ends. Everything that can
// fail is checked before anything is written: the embedded store's lock,
// the listen addresses, the TLS pair and the TSIG key, then the store and
// the KEK; only then is the schema migrated, and only then may a KEK or an
// operator token be generated (docs/operator-guide.md, "Brands and maildomains").
func serve(ctx context.Context, inv *invocation) error {
	cfg, log := inv.cfg, inv.log
	embedded := cfg.DatabaseURL == ""
	var lock *serveLock
	if embedded {
		if _, err := os.Stat(cfg.DataDir); err == nil {
			if lock, err = lockDataDir(cfg.DataDir); err != nil {
				return err
			}
		}
	}
	// A closure, not lock.release() evaluated now: the lock may be taken
	// below, and must stay referenced until serve returns, or the collector
	// finalises its file and the kernel drops the flock.
	defer func() {
		if err := lock.release(); err != nil {
			log.Warn("serve lock not released cleanly", slog.String("err", err.Error()))
		}
	}()
	if err := preflight(cfg); err != nil {
		return err
	}
	if embedded && lock == nil {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fail(err, "cannot create the data dir %s", cfg.DataDir)
		}
		var err error
		if lock, err = lockDataDir(cfg.DataDir); err != nil {
			return err
		}
	}
	raiseFileLimit(log)
	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	// The KEK is checked before the schema changes: a refused start leaves
	// the database as it was.
	plan, err := planKEK(ctx, cfg, store, embedded)
	if err != nil {
		return err
	}
	if err := migrateStore(ctx, store, log); err != nil {
		return err
	}
	box := plan.box
	if plan.generate {
		if box, err = sealbox.Generate(plan.path); err != nil {
			return fail(err, "cannot generate the key-encryption key %s", plan.path)
		}
		log.Warn("generated a new key-encryption key; back it up, without it the private keys cannot be read",
			slog.String("path", plan.path), slog.String("kek_id", box.CurrentID()))
	}
	token, err := loadOperatorToken(cfg.OperatorTokenFile, log)
	if err != nil {
		return fmt.Errorf("--operator-token-file: %w", err)
	}
	a := &app{cfg: cfg, log: log, store: store, box: box, registry: prometheus.NewRegistry(), now: time.Now,
		ready: ops.NewReadiness(), operatorToken: token}
	a.svc = &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: cfg.Zone, Now: a.now,
		RotationInterval: cfg.RotationInterval}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.KeyPoolSize > 0 {
		a.svc.Keys = a.startKeyPool(gctx, g)
	}
	// The ops listener starts first, so that /readyz answers during a long
	// zone load; until every listener is up it must say not ready, and name
	// the zone from the start rather than from when DNS registers its check.
	var started atomic.Bool
	a.ready.Register("startup", func(context.Context) error {
		if !started.Load() {
			return errors.New("listeners still starting")
		}
		return nil
	})
	if cfg.DNSAddr != "" {
		a.ready.Register("zone", func(context.Context) error { return errors.New("zone not loaded") })
	}
	for _, start := range []func(context.Context, *errgroup.Group) error{
		a.startOps, a.startDNS, a.startAPI, a.startSign, a.startMilter, a.startRotation,
	} {
		if err := start(gctx, g); err != nil {
			return err
		}
	}
	started.Store(true)
	log.Info("dkimd serving", slog.String("version", version), slog.String("dialect", store.Dialect()),
		slog.String("zone", cfg.Zone), slog.String("api_addr", cfg.APIAddr), slog.String("dns_addr", cfg.DNSAddr))
	err = waitBounded(gctx, g, shutdownDeadline)
	log.Info("dkimd stopped")
	return err
}

// shutdownDeadline bounds how long listeners and loops may take to stop
// after SIGTERM; it sits under the 30 s grace of the Kubernetes manifest and
// the systemd unit, so that dkimd exits by itself with a message rather than
// being killed.
const shutdownDeadline = 25 * time.Second

// waitBounded waits for the group; once ctx ends (SIGTERM, or a listener
// failed and cancelled the group), it waits at most
// deadline more.
func waitBounded(ctx context.Context, g *errgroup.Group, deadline time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return err
	case <-time.After(deadline):
		return fmt.Errorf("shutdown: listeners and loops did not stop within %s", deadline)
	}
}

// startKeyPool fills a pool of RSA keys in the background so that PUTs do
// not wait for key generation, and exports how full it is.
func (a *app) startKeyPool(ctx context.Context, g *errgroup.Group) *provision.Pool {
	pool := provision.NewPool(a.cfg.KeyPoolSize, a.log)
	misses := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dkimd_keypool_misses_total",
		Help: "Key generations that found the pool of pre-generated RSA keys empty and generated inline.",
	})
	pool.OnMiss(misses.Inc)
	a.registry.MustRegister(misses, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dkimd_keypool_keys",
		Help: "Pre-generated RSA keys ready in the pool.",
	}, func() float64 { return float64(pool.Len()) }))
	g.Go(func() error { return pool.Run(ctx) })
	return pool
}

// serveHTTP runs srv on ln until ctx ends, then lets in-flight requests
// finish within grace before it closes what is left.
func serveHTTP(ctx context.Context, g *errgroup.Group, name string, srv *http.Server, ln net.Listener, grace time.Duration) {
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			return fmt.Errorf("%s listener: shutdown: %w", name, err)
		}
		return nil
	})
}
