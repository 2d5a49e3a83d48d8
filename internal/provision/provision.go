// Package provision carries out the operations that create, change and
// destroy keys and the things that own them — brands, maildomains and DKIM
// domains — each as one store transaction with its audit record. The brand
// API, the admin API, the CLI and the rotation loop all go through it, so the
// rules (naming, key sizes, sealing, audit) live in one place.
//
// It does not authenticate anyone: callers pass the actor they vouch for.
package provision

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// Selector names, as domainname defines them.
const (
	Selector1        = domainname.Selector1
	Selector2        = domainname.Selector2
	Selector1Ed25519 = domainname.Selector1Ed25519
	Selector2Ed25519 = domainname.Selector2Ed25519
)

// Errors callers map to statuses; they wrap more detail.
var (
	ErrNotMaildomain = errors.New("domain is not a maildomain of this brand")
	ErrHeldByOther   = errors.New("domain is held by another brand")
	ErrLabelClash    = errors.New("label clash")
	ErrBadOptions    = errors.New("bad key options")
)

// KeyGenerator makes private keys; a pool of pre-generated RSA keys
// satisfies it as well as dkimkey.Generate does.
type KeyGenerator interface {
	Generate(ctx context.Context, alg string, bits int) (crypto.Signer, error)
}

// DirectGenerator generates every key on demand.
type DirectGenerator struct{}

// Generate calls dkimkey.Generate.
func (DirectGenerator) Generate(_ context.Context, alg string, bits int) (crypto.Signer, error) {
	return dkimkey.Generate(alg, bits)
}

// Service performs provisioning operations on a store.
type Service struct {
	Store keystore.Store
	Box   *sealbox.Box
	Keys  KeyGenerator
	Zone  string // the service's own zone, e.g. oxcloud.zone
	Now   func() time.Time
	// RotationInterval is the default interval between automatic
	// rotations (brands may override it). When set, a new domain's entry
	// shows its first rotation from the start; when zero the rotation loop
	// fills it in at its first look.
	RotationInterval time.Duration
}

// slot is one selector a new domain gets, and the state its first key starts in.
type slot struct {
	selector, alg string
	bits          int
	state         keystore.KeyState
}

// Actor says who asked for a change, for the audit log.
type Actor struct {
	Name      string // "brand:acme", "operator", "cli", "rotation"
	RequestID string
}

// NewKey generates and seals a key for one slot.
func (s *Service) NewKey(ctx context.Context, kind keystore.OwnerKind, owner, selector, alg string, bits int, state keystore.KeyState) (keystore.Key, error) {
	priv, err := s.Keys.Generate(ctx, alg, bits)
	if err != nil {
		return keystore.Key{}, fmt.Errorf("provision: %w", err)
	}
	return SealKey(s.Box, s.Now(), kind, owner, selector, priv, state)
}

// SealKey builds the stored form of priv for one slot, published now.
func SealKey(box *sealbox.Box, now time.Time, kind keystore.OwnerKind, owner, selector string, priv crypto.Signer, state keystore.KeyState) (keystore.Key, error) {
	alg, err := dkimkey.Algorithm(priv.Public())
	if err != nil {
		return keystore.Key{}, err
	}
	pub, err := dkimkey.PublicBytes(priv.Public())
	if err != nil {
		return keystore.Key{}, err
	}
	kekID, sealed, err := dkimkey.Seal(box, priv, sealbox.AssociatedData(string(kind), owner, selector))
	if err != nil {
		return keystore.Key{}, err
	}
	bits := 256 // Ed25519
	if rk, ok := priv.Public().(*rsa.PublicKey); ok {
		bits = rk.N.BitLen()
	}
	k := keystore.Key{
		OwnerKind: kind, Owner: owner, Selector: selector, State: state, Algorithm: alg, KeyBits: bits,
		PublicKey: pub, SealedPrivateKey: sealed, KEKID: kekID, Fingerprint: dkimkey.Fingerprint(pub),
		CreatedAt: now, PublishedAt: now,
	}
	if state == keystore.StateActive {
		k.ActivatedAt = now
	}
	return k, nil
}

// DomainOptions are the optional PUT body fields.
type DomainOptions struct {
	KeyBits int  // 0 means 2048
	Ed25519 bool // adds the Ed25519 selector pair
}

// CreateDomain generates keys for a maildomain and publishes them. domain
// must already be normalised. It is idempotent: when the brand already holds
// the domain it returns the existing one with created false and changes
// nothing.
func (s *Service) CreateDomain(ctx context.Context, brand, domain string, opts DomainOptions, actor Actor) (d keystore.Domain, keys []keystore.Key, created bool, err error) {
	if opts.KeyBits == 0 {
		opts.KeyBits = dkimkey.DefaultRSABits
	}
	if !dkimkey.ValidRSABits(opts.KeyBits) {
		return d, nil, false, fmt.Errorf("%w: keyBits must be 2048, 3072 or 4096", ErrBadOptions)
	}
	label := domainname.Label(domain)
	if err := domainname.CheckLabelFits(label, opts.Ed25519); err != nil {
		return d, nil, false, err
	}
	if d, keys, done, err := s.existing(ctx, brand, domain, label); done || err != nil {
		return d, keys, false, err
	}
	ok, err := s.Store.IsMaildomain(ctx, brand, domain)
	if err != nil {
		return d, nil, false, err
	}
	if !ok {
		return d, nil, false, fmt.Errorf("%w: %s", ErrNotMaildomain, domain)
	}

	// Generate outside the transaction: key generation is slow and must not
	// hold a write lock.
	slots := []slot{
		{Selector1, dkimkey.RSA, opts.KeyBits, keystore.StateActive},
		{Selector2, dkimkey.RSA, opts.KeyBits, keystore.StateNext},
	}
	if opts.Ed25519 {
		slots = append(slots,
			slot{Selector1Ed25519, dkimkey.Ed25519, 0, keystore.StateActive},
			slot{Selector2Ed25519, dkimkey.Ed25519, 0, keystore.StateNext})
	}
	for _, sl := range slots {
		k, err := s.NewKey(ctx, keystore.OwnerDomain, domain, sl.selector, sl.alg, sl.bits, sl.state)
		if err != nil {
			return d, nil, false, err
		}
		keys = append(keys, k)
	}
	now := s.Now()
	d = keystore.Domain{
		Name: domain, Label: label, Brand: brand, Status: keystore.StatusPendingDNS,
		StatusReason: PendingReason(Selector1), ActiveSelector: Selector1,
		KeyBits: opts.KeyBits, Ed25519: opts.Ed25519, CreatedAt: now, UpdatedAt: now, NextCheckAt: now,
	}
	err = s.Store.Update(ctx, func(tx keystore.Tx) error {
		if s.RotationInterval > 0 {
			// The rotation loop counts the first rotation from the active
			// key's activation; set it here so that the entry a PUT answers
			// does not change at the loop's first look.
			interval := s.RotationInterval
			b, err := tx.Brand(ctx, brand)
			if err != nil {
				return err
			}
			if b.RotationInterval > 0 {
				interval = b.RotationInterval
			}
			d.NextRotationAt = keys[0].ActivatedAt.Add(interval)
		}
		var err error
		if d, err = tx.CreateDomain(ctx, d); err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.PutKey(ctx, k); err != nil {
				return err
			}
			if err := tx.AppendAudit(ctx, auditKey(now, actor, "key.create", brand, k)); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.create",
			Brand: brand, Domain: domain, RequestID: actor.RequestID})
	})
	if errors.Is(err, keystore.ErrConflict) {
		// A concurrent PUT won the race, or the label or name is taken.
		if d, keys, done, err2 := s.existing(ctx, brand, domain, label); done || err2 != nil {
			return d, keys, false, err2
		}
	}
	if err != nil {
		return keystore.Domain{}, nil, false, err
	}
	return d, keys, true, nil
}

// existing reports an existing domain of this brand (done), or the reason
// the name or label cannot be taken.
func (s *Service) existing(ctx context.Context, brand, domain, label string) (keystore.Domain, []keystore.Key, bool, error) {
	// One lookup, by label: the label follows from the name, so this sees
	// the domain itself and any clash at the same instant (two lookups could
	// straddle a concurrent PUT's commit and report the domain as clashing
	// with itself).
	d, err := s.Store.DomainByLabel(ctx, label)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return keystore.Domain{}, nil, false, nil
	case err != nil:
		return keystore.Domain{}, nil, false, err
	case d.Name != domain && d.Brand == brand:
		return keystore.Domain{}, nil, false, fmt.Errorf("%w: %s maps to the label %s that %s already uses", ErrLabelClash, domain, label, d.Name)
	case d.Name != domain:
		// Another brand's domain: which one is none of this brand's
		// business (docs/api.md), only that the label is taken.
		return keystore.Domain{}, nil, false, fmt.Errorf("%w: %s maps to the label %s, which is taken", ErrLabelClash, domain, label)
	case d.Brand != brand:
		return d, nil, false, fmt.Errorf("%w: %s", ErrHeldByOther, domain)
	}
	keys, err := s.Store.Keys(ctx, keystore.OwnerDomain, domain)
	return d, keys, err == nil, err
}

// DeleteDomain removes a brand's domain, its published records and its
// private keys.
func (s *Service) DeleteDomain(ctx context.Context, brand, domain string, actor Actor) error {
	now := s.Now()
	return s.Store.Update(ctx, func(tx keystore.Tx) error {
		d, err := tx.Domain(ctx, domain)
		if err != nil {
			return err
		}
		if d.Brand != brand {
			return fmt.Errorf("provision: delete %s: %w", domain, keystore.ErrNotFound)
		}
		keys, err := tx.Keys(ctx, keystore.OwnerDomain, domain)
		if err != nil {
			return err
		}
		return deleteDomainTx(ctx, tx, now, brand, domain, keys, actor)
	})
}

// deleteDomainTx deletes a domain and its keys (destroying the private
// halves, and taking the TXT records out of the zone) with their audit
// records: DELETE, and maildomain removal with force.
func deleteDomainTx(ctx context.Context, tx keystore.Tx, now time.Time, brand, domain string, keys []keystore.Key, actor Actor) error {
	if err := tx.DeleteDomain(ctx, domain); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.AppendAudit(ctx, auditKey(now, actor, "key.destroy", brand, k)); err != nil {
			return err
		}
	}
	return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.delete",
		Brand: brand, Domain: domain, RequestID: actor.RequestID})
}

func auditKey(now time.Time, actor Actor, action, brand string, k keystore.Key) keystore.AuditRecord {
	r := keystore.AuditRecord{At: now, Actor: actor.Name, Action: action, Brand: brand, Selector: k.Selector,
		Fingerprint: k.Fingerprint, RequestID: actor.RequestID, Detail: string(k.State)}
	if k.OwnerKind == keystore.OwnerDomain {
		r.Domain = k.Owner
	}
	return r
}
