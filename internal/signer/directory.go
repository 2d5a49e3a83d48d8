package signer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// directory is what the signer knows of every maildomain, so that a From
// domain it has not resolved yet can still be signed while the store is away
// (docs/reliability.md, "Faults": signing keeps serving from memory): with
// its brand's fallback key, valid but not aligned. It is immutable once
// built; a reload builds a new one.
type directory struct {
	brands []string
	// keys[i] is brands[i]'s active fallback keys, RSA first; nil when the
	// brand has none (or they could not be opened).
	keys [][]*signingKey
	// domains maps a maildomain to its brand's index in brands, or to
	// ambiguousBrand when several brands have it. A brand index, not the
	// name: there may be a million maildomains and only a few brands.
	domains map[string]uint32
	// loadedAt is when domains was read; gen the cache generation the keys
	// were read at, so that a key change (Invalidate) reloads them.
	loadedAt time.Time
	gen      uint64
}

const ambiguousBrand = math.MaxUint32

// fallback returns the plan for a maildomain of exactly one brand that has
// an active fallback key, or nil.
func (d *directory) fallback(domain, zone string) *plan {
	i, ok := d.domains[domain]
	if !ok || i == ambiguousBrand || d.keys[i] == nil {
		return nil
	}
	return &plan{fromDomain: domain, mode: ModeFallback, domain: d.brands[i] + "." + zone, keys: d.keys[i]}
}

// Warm loads the outage directory from the store: every maildomain's brand,
// and each brand's fallback keys, parsed. Until it has succeeded once, a
// store outage fails messages from domains the signer has not resolved yet;
// KeepWarm calls it, and reloads.
func (s *Signer) Warm(ctx context.Context) error {
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	start := time.Now()
	gen := s.cache.gen.Load()
	hint := 0
	if old := s.dir.Load(); old != nil {
		hint = len(old.domains)
	}
	d := &directory{domains: make(map[string]uint32, hint), loadedAt: s.opts.Now(), gen: gen}
	index := make(map[string]uint32)
	err := s.opts.Store.EachMaildomain(ctx, func(domain, brand string) error {
		i, ok := index[brand]
		if !ok {
			if len(d.brands) >= ambiguousBrand {
				return errors.New("too many brands")
			}
			i = uint32(len(d.brands))
			index[brand] = i
			d.brands = append(d.brands, brand)
		}
		if prev, ok := d.domains[domain]; ok && prev != i {
			i = ambiguousBrand
		}
		d.domains[domain] = i
		return nil
	})
	if err != nil {
		return fmt.Errorf("signer: load maildomains: %w", err)
	}
	if d.keys, err = s.brandKeys(ctx, d.brands); err != nil {
		return err
	}
	s.dir.Store(d)
	s.opts.Log.Info("signer loaded its outage directory", slog.Int("maildomains", len(d.domains)),
		slog.Int("brands", len(d.brands)), slog.Duration("took", time.Since(start)))
	return nil
}

// rekey reloads the brands' keys of the current directory, keeping its
// maildomains: what a key change (Invalidate) asks for, and cheap, since
// brands are few.
func (s *Signer) rekey(ctx context.Context) error {
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	old := s.dir.Load()
	if old == nil {
		return errors.New("signer: no directory to re-key")
	}
	gen := s.cache.gen.Load()
	keys, err := s.brandKeys(ctx, old.brands)
	if err != nil {
		return err
	}
	d := *old
	d.keys, d.gen = keys, gen
	s.dir.Store(&d)
	return nil
}

// brandKeys reads and parses each brand's active fallback keys. A key that
// does not open leaves its brand without (logged): one bad key must not keep
// the others from the directory. A store failure fails the load.
func (s *Signer) brandKeys(ctx context.Context, brands []string) ([][]*signingKey, error) {
	keys := make([][]*signingKey, len(brands))
	for i, b := range brands {
		k, err := s.cache.active(ctx, keystore.OwnerBrand, b, domainname.Selector1)
		if err != nil {
			if errors.Is(err, keystore.ErrUnavailable) || ctx.Err() != nil {
				return nil, fmt.Errorf("signer: load brand keys: %w", err)
			}
			s.opts.Log.Warn("brand fallback key left out of the outage directory", slog.String("brand", b), slog.Any("err", err))
			continue
		}
		keys[i] = k
	}
	return keys, nil
}

// KeepWarm loads the outage directory now and keeps it current until ctx
// ends: the brands' keys after each key change (Invalidate, which the
// store's Watch calls), checked every MaxAge; the maildomains every
// DirectoryRefresh, since adding one announces nothing. A failed load keeps
// the previous directory and is retried at the next check.
func (s *Signer) KeepWarm(ctx context.Context) {
	t := time.NewTicker(s.opts.MaxAge)
	defer t.Stop()
	for {
		var err error
		d := s.dir.Load()
		switch {
		case d == nil || s.opts.Now().Sub(d.loadedAt) >= s.opts.DirectoryRefresh:
			err = s.Warm(ctx)
		case d.gen != s.cache.gen.Load():
			err = s.rekey(ctx)
		}
		if err != nil && ctx.Err() == nil {
			s.opts.Log.Warn("signer could not refresh its outage directory; keeping the last one", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
