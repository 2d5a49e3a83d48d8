package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sync/errgroup"

	"dkimd/internal/ops"
	"dkimd/internal/zone"
)

// startDNS starts the authoritative DNS server for the zone and the loops
// that keep it current; they stop when ctx ends.
func (a *app) startDNS(ctx context.Context, g *errgroup.Group) error {
	if a.cfg.DNSAddr == "" {
		a.log.Info("DNS server disabled")
		return nil
	}
	opts := zone.Options{
		Params: zone.Params{
			Zone: a.cfg.Zone, NS: a.cfg.NS, NSAddrs: a.cfg.NSAddrs, SOAMbox: a.cfg.SOAMbox,
			Refresh: a.cfg.SOARefresh, Retry: a.cfg.SOARetry, Expire: a.cfg.SOAExpire, Minimum: a.cfg.SOAMinimum,
			TTL: a.cfg.RecordTTL,
		},
		Addr:        a.cfg.DNSAddr,
		Secondaries: a.cfg.Secondaries,
		XFRAllow:    a.cfg.XFRAllow,
		Reconcile:   a.cfg.ReconcileInt,
		RRL:         a.cfg.DNSRRL,
		RRLSlip:     a.cfg.DNSRRLSlip,
		RRLExempt:   a.cfg.DNSRRLExempt,
		TCPMax:      a.cfg.DNSTCPMax,
		RetryAccept: func(ln net.Listener) net.Listener { return ops.RetryAccept(a.registry, a.log, "dns-tcp", ln) },
		Log:         a.log.With(slog.String("component", "dns")),
		Registry:    a.registry,
	}
	if a.cfg.TSIGKeyFile != "" {
		k, err := zone.LoadTSIGKey(a.cfg.TSIGKeyFile)
		if err != nil {
			return fmt.Errorf("--tsig-key-file: %w", err)
		}
		opts.TSIG = &k
	}
	srv, err := zone.New(opts, a.store)
	if err != nil {
		return err
	}
	// Every commit that changed the zone: this process's at once, other
	// replicas' through the store's notifications.
	a.store.Watch(ctx, srv.Kick)
	// Registered before the first load, which takes tens of seconds at a
	// million domains: /readyz must say "not ready" during it.
	a.readiness().Register("zone", func(context.Context) error {
		if srv.Snapshot() == nil {
			return errors.New("zone not loaded")
		}
		return nil
	})
	if err := srv.Sync(ctx); err != nil {
		return fmt.Errorf("dns: load zone: %w", err)
	}
	if err := srv.Listen(); err != nil {
		return fmt.Errorf("--dns-addr: %w", err)
	}
	a.log.Info("DNS listening", slog.String("addr", srv.Addr()), slog.String("zone", a.cfg.Zone),
		slog.Uint64("serial", uint64(srv.Snapshot().Serial())), slog.Int("records", srv.Snapshot().Records()),
		slog.Int("rrl", a.cfg.DNSRRL), slog.Int("rrl_slip", a.cfg.DNSRRLSlip), slog.Int("rrl_exempt", len(a.cfg.DNSRRLExempt)),
		slog.Int("tcp_max", a.cfg.DNSTCPMax))
	g.Go(func() error { return srv.Serve(ctx) })
	return nil
}
