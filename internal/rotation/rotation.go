// Package rotation owns the life of keys after their creation: the slot
// state machine (next -> active -> retiring -> fresh next, revoked on
// emergency), the checks of customers' CNAMEs through a resolver that gate
// every switch and drive a domain's status, the loop that runs both on a
// schedule with back-off, and the leader election that lets exactly one
// replica run that loop.
//
// It does not serve HTTP or DNS and never sees a private key in the clear:
// fresh keys come sealed from package provision, and every change is one
// store transaction guarded by the domain's optimistic version.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// Store is what rotation needs of the keystore: the common interface plus
// the loop's own queries (internal/keystore/rotation.go).
type Store interface {
	keystore.Store
	DueDomains(ctx context.Context, now time.Time, limit int) ([]keystore.Domain, error)
	RetiredKeys(ctx context.Context, before time.Time, limit int) ([]keystore.Key, error)
	DomainStatusCounts(ctx context.Context) (map[string]int, error)
	KeyStateCounts(ctx context.Context) (map[keystore.KeyState]int, error)
	OldestActiveKeyPublishedAt(ctx context.Context) (time.Time, error)
	PruneZoneJournal(ctx context.Context, keep uint32) (int64, error)
}

var _ Store = (*keystore.SQL)(nil)

// KeyMaker mints a fresh sealed key for a slot; *provision.Service is one.
type KeyMaker interface {
	NewKey(ctx context.Context, kind keystore.OwnerKind, owner, selector, alg string, bits int, state keystore.KeyState) (keystore.Key, error)
}

// DNSChecker checks one selector of a domain in public DNS; *Checker is one.
type DNSChecker interface {
	CheckKey(ctx context.Context, d keystore.Domain, k keystore.Key) (SelectorCheck, error)
}

// Config is the rotation policy. Zero fields take the defaults below.
type Config struct {
	PublishLeadTime  time.Duration // a fresh key is published this long before it may sign
	RotationInterval time.Duration // default between automatic rotations; brands may override
	RetireGrace      time.Duration // a retired key stays published this long
	// SettledCheckInterval is how often a domain whose DNS is in order is
	// checked again.
	SettledCheckInterval time.Duration
	// MinBackoff and MaxBackoff bound the retry interval of a domain whose
	// check failed or whose switch waits: it doubles from MinBackoff. After
	// FrequentRetries unhealthy checks in a row (about two days with the
	// defaults) a domain is retried at the settled interval only, so that
	// customers who never finish their DNS setup do not cost a check an
	// hour for ever.
	MinBackoff, MaxBackoff time.Duration
	FrequentRetries        int
	// BatchSize bounds the domains one Step looks at, and so the checks
	// sent to the resolver per tick.
	BatchSize int
	// Workers is how many domains are checked at once.
	Workers int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PublishLeadTime, 96*time.Hour)
	def(&c.RotationInterval, 180*24*time.Hour)
	def(&c.RetireGrace, 7*24*time.Hour)
	def(&c.SettledCheckInterval, 24*time.Hour)
	def(&c.MinBackoff, 30*time.Second)
	def(&c.MaxBackoff, time.Hour)
	if c.FrequentRetries <= 0 {
		c.FrequentRetries = 56
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 200
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	return c
}

// Actor is who the loop's own changes are audited as.
var Actor = provision.Actor{Name: "rotation"}

// maxAttempts bounds retries of a step that lost a race with another writer.
const maxAttempts = 5

// Service runs rotation steps and answers the API's rotation calls.
type Service struct {
	store   Store
	keys    KeyMaker
	checker DNSChecker
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	m       *metrics

	mu            sync.Mutex
	nextBrandPass time.Time
	nextGauges    time.Time
	nextPrune     time.Time
}

// gaugeInterval spaces the counts behind the domain and key gauges: they
// scan every domain and key, which at a million domains costs real CPU on
// every 5 s tick, and a scrape every 15–60 s needs nothing fresher.
const gaugeInterval = time.Minute

// New builds the service and registers its metrics on reg (nil: none).
func New(store Store, keys KeyMaker, checker DNSChecker, cfg Config, now func() time.Time, log *slog.Logger, reg *prometheus.Registry) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Service{store: store, keys: keys, checker: checker, cfg: cfg.withDefaults(), now: now, log: log, m: m}, nil
}

// Config is the policy in force, defaults applied.
func (s *Service) Config() Config { return s.cfg }

// Step runs one round of the loop at the clock's now: brands' fallback keys,
// then up to BatchSize due domains. A failure of one domain is logged and
// counted and does not stop the others; Step returns an error only when it
// cannot read its work list.
func (s *Service) Step(ctx context.Context) error {
	now := s.now()
	brands, err := s.store.Brands(ctx)
	if err != nil {
		s.m.failures.WithLabelValues("store").Inc()
		return fmt.Errorf("rotation: step: %w", err)
	}
	intervals := map[string]time.Duration{}
	for _, b := range brands {
		intervals[b.Name] = b.RotationInterval
	}
	// Brand keys change on a scale of days: look at them once a minute,
	// not every tick.
	s.mu.Lock()
	brandPass := !now.Before(s.nextBrandPass)
	if brandPass {
		s.nextBrandPass = now.Add(time.Minute)
	}
	s.mu.Unlock()
	for _, b := range brands {
		if !brandPass {
			break
		}
		if err := s.stepBrand(ctx, b, now); err != nil && ctx.Err() == nil {
			s.m.failures.WithLabelValues(failureReason(err)).Inc()
			s.log.Error("rotation of brand fallback keys failed", slog.String("brand", b.Name), slog.Any("err", err))
		}
	}
	due, err := s.store.DueDomains(ctx, now, s.cfg.BatchSize)
	if err != nil {
		s.m.failures.WithLabelValues("store").Inc()
		return fmt.Errorf("rotation: step: %w", err)
	}
	work := make(chan keystore.Domain)
	var wg sync.WaitGroup
	for range min(s.cfg.Workers, len(due)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				if err := s.stepDomain(ctx, d, now, intervals[d.Brand]); err != nil && ctx.Err() == nil {
					s.m.failures.WithLabelValues(failureReason(err)).Inc()
					s.log.Error("rotation step failed", slog.String("domain", d.Name), slog.Any("err", err))
				}
			}
		}()
	}
	for _, d := range due {
		work <- d
	}
	close(work)
	wg.Wait()
	s.mu.Lock()
	gaugesDue := !now.Before(s.nextGauges)
	if gaugesDue {
		s.nextGauges = now.Add(gaugeInterval)
	}
	s.mu.Unlock()
	if gaugesDue {
		if err := s.updateGauges(ctx, now); err != nil {
			s.log.Warn("rotation gauges not updated", slog.Any("err", err))
		}
	}
	s.pruneJournal(ctx, now)
	return ctx.Err()
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, errKeygen):
		return "keygen"
	case errors.Is(err, keystore.ErrStale):
		return "conflict"
	}
	return "store"
}

var errKeygen = errors.New("rotation: key generation")

// interval is a brand's rotation interval, or the default.
func (s *Service) interval(brand time.Duration) time.Duration {
	if brand > 0 {
		return brand
	}
	return s.cfg.RotationInterval
}

// otherSelector is the slot paired with sel: selector1 <-> selector2, and
// the same for the Ed25519 pair.
func otherSelector(sel string) string {
	switch sel {
	case provision.Selector1:
		return provision.Selector2
	case provision.Selector2:
		return provision.Selector1
	case provision.Selector1Ed25519:
		return provision.Selector2Ed25519
	case provision.Selector2Ed25519:
		return provision.Selector1Ed25519
	}
	return ""
}

// edSelector is the Ed25519 selector that follows the RSA selector sel.
func edSelector(sel string) string { return sel + "-ed25519" }

// pairs lists the (active, other) selector pairs of a domain: the RSA pair,
// and the Ed25519 pair following it when the domain has one.
func pairs(d keystore.Domain) [][2]string {
	act := d.ActiveSelector
	out := [][2]string{{act, otherSelector(act)}}
	if d.Ed25519 {
		out = append(out, [2]string{edSelector(act), edSelector(otherSelector(act))})
	}
	return out
}

// hasSelector says whether sel is one of the domain's selectors now: a
// domain whose Ed25519 pair was switched off keeps its keys only until
// their grace ends.
func hasSelector(d keystore.Domain, sel string) bool {
	switch sel {
	case provision.Selector1, provision.Selector2:
		return true
	case provision.Selector1Ed25519, provision.Selector2Ed25519:
		return d.Ed25519
	}
	return false
}

func byselector(keys []keystore.Key) map[string]keystore.Key {
	m := make(map[string]keystore.Key, len(keys))
	for _, k := range keys {
		m[k.Selector] = k
	}
	return m
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// earliestAfter is the earliest of ts that lies after now, or fallback.
func earliestAfter(now, fallback time.Time, ts ...time.Time) time.Time {
	out := fallback
	for _, t := range ts {
		if t.After(now) && t.Before(out) {
			out = t
		}
	}
	return out
}

// replaceDue says whether a retiring or revoked key has served its grace.
func (s *Service) replaceDue(k keystore.Key, now time.Time) bool {
	return (k.State == keystore.StateRetiring || k.State == keystore.StateRevoked) && !now.Before(k.RetiredAt.Add(s.cfg.RetireGrace))
}

// eligibleAt is when the key in a slot may sign at the earliest: its
// publication plus the lead time, or for a slot still waiting for its fresh
// key, the end of the grace plus the lead time.
func (s *Service) eligibleAt(k keystore.Key) time.Time {
	if k.State == keystore.StateNext {
		return k.PublishedAt.Add(s.cfg.PublishLeadTime)
	}
	return k.RetiredAt.Add(s.cfg.RetireGrace + s.cfg.PublishLeadTime)
}

// freshKeys mints the fresh next keys for slots whose grace is over.
// Generation is slow, so it happens before, never inside, a transaction.
// rsaBits, when not 0, is the size of fresh RSA keys (a domain's keyBits,
// which a PUT may have changed since the old key was made); otherwise a
// fresh key has its predecessor's size.
func (s *Service) freshKeys(ctx context.Context, kind keystore.OwnerKind, owner string, keys map[string]keystore.Key, sels []string, now time.Time, force bool, rsaBits int) (map[string]keystore.Key, error) {
	out := map[string]keystore.Key{}
	for _, sel := range sels {
		k, ok := keys[sel]
		if !ok || !(force || s.replaceDue(k, now)) {
			continue
		}
		bits := k.KeyBits
		if k.Algorithm == dkimkey.RSA && rsaBits != 0 {
			bits = rsaBits
		}
		nk, err := s.keys.NewKey(ctx, kind, owner, sel, k.Algorithm, bits, keystore.StateNext)
		if err != nil {
			return nil, fmt.Errorf("%w: %s/%s: %w", errKeygen, owner, sel, err)
		}
		out[sel] = nk
	}
	return out, nil
}

func audit(now time.Time, actor provision.Actor, action, brand string, k keystore.Key, detail string) keystore.AuditRecord {
	r := keystore.AuditRecord{At: now, Actor: actor.Name, Action: action, Brand: brand, Selector: k.Selector,
		Fingerprint: k.Fingerprint, RequestID: actor.RequestID, Detail: detail}
	if k.OwnerKind == keystore.OwnerDomain {
		r.Domain = k.Owner
	}
	return r
}

// joinReasons joins the non-empty parts of a status reason.
func joinReasons(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

// pruneJournal trims the zone change journal once an hour. It runs here
// because exactly one replica runs this loop; replicas that fall behind the
// kept part reload their zone whole.
func (s *Service) pruneJournal(ctx context.Context, now time.Time) {
	s.mu.Lock()
	due := !now.Before(s.nextPrune)
	if due {
		s.nextPrune = now.Add(time.Hour)
	}
	s.mu.Unlock()
	if !due {
		return
	}
	n, err := s.store.PruneZoneJournal(ctx, keystore.ZoneJournalKeep)
	if err != nil {
		s.log.Warn("zone change journal not pruned", slog.Any("err", err))
		return
	}
	if n > 0 {
		s.log.Info("pruned the zone change journal", slog.Int64("entries", n))
	}
}
