package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"dkimd/internal/rsasign"
	"dkimd/internal/signer"
	"dkimd/internal/signhttp"
)

// signShutdownTimeout bounds how long in-flight sign requests may finish
// after SIGTERM; a signature takes milliseconds, reading a large message
// over a slow link is what takes time.
const signShutdownTimeout = 15 * time.Second

// sharedSigner returns the process's one Signer, built on first use: the
// sign endpoint and the milter share it, so there is one key cache, one
// outage directory and one store watch however many transports listen (the
// transports count their own requests). Key changes committed by this
// process or another replica reach it through the store's Watch; a domain's
// status change, which announces nothing, within signer.Options.MaxAge
// (30 s). ctx and g are those of serve: every caller passes the same.
func (a *app) sharedSigner(ctx context.Context, g *errgroup.Group) (*signer.Signer, error) {
	if a.signer != nil {
		return a.signer, nil
	}
	rsaBackend, err := a.rsaBackend()
	if err != nil {
		return nil, err
	}
	s, err := signer.New(signer.Options{
		Store: a.store, Box: a.box, Zone: a.cfg.Zone, Now: a.now, SignExpiry: a.cfg.SignExpiry,
		Log: a.log.With(slog.String("component", "signer")), Registerer: a.registry,
		RSA: rsaBackend.Signer,
	})
	if err != nil {
		return nil, err
	}
	a.store.Watch(ctx, s.Invalidate)
	// The outage directory: every maildomain's brand and the brands'
	// fallback keys, so that a domain not yet resolved is still signed
	// (with its brand's key) while the store is away. Loaded in the
	// background so a large store does not hold up start-up.
	g.Go(func() error {
		s.KeepWarm(ctx)
		return nil
	})
	a.signer = s
	return s, nil
}

// rsaBackend resolves --rsa-backend (docs/decisions.md, "RSA signatures
// through libcrypto"): openssl where libcrypto cannot be loaded is a
// start-up error naming the flag, auto falls back to Go with a warning
// saying why. The choice is logged and exported as
// dkimd_sign_rsa_backend_info{backend}.
func (a *app) rsaBackend() (rsasign.Backend, error) {
	b, unavailable, err := rsasign.Select(a.cfg.RSABackend)
	if err != nil {
		return b, err
	}
	if unavailable != nil {
		a.log.Warn("rsa backend", slog.String("backend", b.Name()), slog.String("rsa_backend", a.cfg.RSABackend),
			slog.String("reason", unavailable.Error()))
	} else {
		a.log.Info("rsa backend", slog.String("backend", b.Name()), slog.String("rsa_backend", a.cfg.RSABackend))
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dkimd_sign_rsa_backend_info",
		Help: "The backend making RSA signatures (--rsa-backend): openssl (the system's libcrypto) or go (crypto/rsa); 1 for the one in use.",
	}, []string{"backend"})
	info.WithLabelValues(b.Name()).Set(1)
	if err := a.registry.Register(info); err != nil {
		return b, err
	}
	return b, nil
}

// startSign starts the MTA sign endpoint; it stops when ctx ends, letting
// in-flight requests finish within signShutdownTimeout.
func (a *app) startSign(ctx context.Context, g *errgroup.Group) error {
	if a.cfg.SignAddr == "" {
		a.log.Info("sign listener disabled")
		return nil
	}
	s, err := a.sharedSigner(ctx, g)
	if err != nil {
		return err
	}
	h, err := signhttp.New(signhttp.Options{
		Signer: s, Token: a.cfg.SignToken, MaxBytes: a.cfg.SignMaxBytes,
		Log: a.log, Registerer: a.registry, Now: a.now,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// Messages stream in; this bounds a stalled upload, not a large one
		// on loopback (64 MB reads in well under a second).
		ReadTimeout:    120 * time.Second,
		WriteTimeout:   150 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", a.cfg.SignAddr)
	if err != nil {
		return fmt.Errorf("--sign-addr: %w", err)
	}
	ln = a.retryAccept("sign", ln)
	a.log.Info("sign endpoint listening", slog.String("addr", ln.Addr().String()),
		slog.Bool("token", a.cfg.SignToken != ""), slog.Int64("max_bytes", a.cfg.SignMaxBytes))
	serveHTTP(ctx, g, "sign", srv, ln, signShutdownTimeout)
	return nil
}
