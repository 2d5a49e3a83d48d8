package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// PutOptions are the fields of a PUT body; a zero field was not given.
type PutOptions struct {
	KeyBits int   // 0: not given (2048 for a new domain, unchanged otherwise)
	Ed25519 *bool // nil: not given (none for a new domain, unchanged otherwise)
}

// PutDomain is the brand API's PUT (docs/api.md): it creates the
// domain's keys, or on a domain the brand already holds applies the
// settings that differ from the stored ones. A repeat with no settings, or
// the same ones, changes nothing at all, so that provisioning scripts can
// retry: same entry, same updatedAt, no audit record.
func (s *Service) PutDomain(ctx context.Context, brand, domain string, o PutOptions, actor Actor) (keystore.Domain, []keystore.Key, bool, error) {
	if o.KeyBits != 0 && !dkimkey.ValidRSABits(o.KeyBits) {
		return keystore.Domain{}, nil, false, fmt.Errorf("%w: keyBits must be 2048, 3072 or 4096", ErrBadOptions)
	}
	d, keys, created, err := s.CreateDomain(ctx, brand, domain, DomainOptions{KeyBits: o.KeyBits, Ed25519: o.Ed25519 != nil && *o.Ed25519}, actor)
	if err != nil || created {
		return d, keys, created, err
	}
	d, keys, err = s.changeSettings(ctx, brand, domain, o, actor)
	return d, keys, false, err
}

// maxAttempts bounds retries of a settings change that lost a race with
// another writer (the rotation loop, mostly).
const maxAttempts = 5

// changeSettings applies o to an existing domain of brand. A new keyBits is
// stored on the domain: every key generated from then on (rotation,
// emergency) has that size, and the keys in place stay until rotation
// replaces them. Ed25519 on adds the selector pair with both keys "next":
// the rotation loop activates the one in the active slot once its CNAME
// checks out, so that no Ed25519 signature is made before the customer's
// DNS can verify it. Ed25519 off retires the pair: its records stay
// published through the retire grace, for mail in flight, and then the
// rotation loop removes them; a retiring key never signs.
func (s *Service) changeSettings(ctx context.Context, brand, domain string, o PutOptions, actor Actor) (keystore.Domain, []keystore.Key, error) {
	for range maxAttempts {
		d, err := s.Store.Domain(ctx, domain)
		if err != nil {
			return keystore.Domain{}, nil, err
		}
		if d.Brand != brand {
			return keystore.Domain{}, nil, fmt.Errorf("%w: %s", ErrHeldByOther, domain)
		}
		bits, ed := d.KeyBits, d.Ed25519
		if o.KeyBits != 0 {
			bits = o.KeyBits
		}
		if o.Ed25519 != nil {
			ed = *o.Ed25519
		}
		if bits == d.KeyBits && ed == d.Ed25519 {
			keys, err := s.Store.Keys(ctx, keystore.OwnerDomain, domain)
			return d, keys, err
		}
		var fresh []keystore.Key
		if ed && !d.Ed25519 {
			if err := domainname.CheckLabelFits(d.Label, true); err != nil {
				return keystore.Domain{}, nil, err
			}
			// Generated outside the transaction: it must not hold a write lock.
			for _, sel := range []string{Selector1Ed25519, Selector2Ed25519} {
				k, err := s.NewKey(ctx, keystore.OwnerDomain, domain, sel, dkimkey.Ed25519, 0, keystore.StateNext)
				if err != nil {
					return keystore.Domain{}, nil, err
				}
				fresh = append(fresh, k)
			}
		}
		var out keystore.Domain
		var outKeys []keystore.Key
		err = s.Store.Update(ctx, func(tx keystore.Tx) error {
			now := s.Now()
			cur := d
			rec := func(r keystore.AuditRecord) error { return tx.AppendAudit(ctx, r) }
			if bits != cur.KeyBits {
				if err := rec(keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.settings", Brand: brand, Domain: domain,
					RequestID: actor.RequestID, Detail: fmt.Sprintf("keyBits %d -> %d: applies to every key generated from now on", cur.KeyBits, bits)}); err != nil {
					return err
				}
				cur.KeyBits = bits
			}
			if ed != cur.Ed25519 {
				old, err := tx.Keys(ctx, keystore.OwnerDomain, domain)
				if err != nil {
					return err
				}
				if err := s.switchEd25519(ctx, tx, brand, domain, ed, old, fresh, actor); err != nil {
					return err
				}
				cur.Ed25519 = ed
				// Let the loop look at once: it checks the new pair's CNAMEs,
				// or schedules the end of the retired pair's grace.
				cur.NextCheckAt = now
			}
			cur.UpdatedAt = now
			var err error
			if out, err = tx.UpdateDomain(ctx, cur); err != nil {
				return err
			}
			outKeys, err = tx.Keys(ctx, keystore.OwnerDomain, domain)
			return err
		})
		if errors.Is(err, keystore.ErrStale) {
			continue
		}
		if err != nil {
			return keystore.Domain{}, nil, err
		}
		return out, outKeys, nil
	}
	return keystore.Domain{}, nil, fmt.Errorf("provision: settings of %s: %w", domain, keystore.ErrStale)
}

// switchEd25519 adds (on) or retires (off) a domain's Ed25519 pair inside tx.
func (s *Service) switchEd25519(ctx context.Context, tx keystore.Tx, brand, domain string, on bool, old, fresh []keystore.Key, actor Actor) error {
	now := s.Now()
	byName := map[string]keystore.Key{}
	for _, k := range old {
		byName[k.Selector] = k
	}
	if on {
		for _, k := range fresh {
			if prev, ok := byName[k.Selector]; ok {
				// A pair retired a moment ago and asked for again: its slot
				// takes the fresh key, as a slot never holds two.
				if err := tx.AppendAudit(ctx, auditKey(now, actor, "key.destroy", brand, prev)); err != nil {
					return err
				}
			}
			k.CreatedAt, k.PublishedAt = now, now
			if err := tx.PutKey(ctx, k); err != nil {
				return err
			}
			r := auditKey(now, actor, "key.create", brand, k)
			r.Detail = "next: signs once its CNAME checks out"
			if err := tx.AppendAudit(ctx, r); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.settings", Brand: brand,
			Domain: domain, RequestID: actor.RequestID, Detail: "ed25519 on: selector1-ed25519 and selector2-ed25519 published"})
	}
	for _, sel := range []string{Selector1Ed25519, Selector2Ed25519} {
		k, ok := byName[sel]
		if !ok || k.State == keystore.StateRetiring || k.State == keystore.StateRevoked {
			continue
		}
		k.State, k.RetiredAt = keystore.StateRetiring, now
		if err := tx.PutKey(ctx, k); err != nil {
			return err
		}
		r := auditKey(now, actor, "key.retire", brand, k)
		r.Detail = "ed25519 off: published until the retire grace ends, then removed"
		if err := tx.AppendAudit(ctx, r); err != nil {
			return err
		}
	}
	// PutKey makes this commit a zone change, though the records stay as
	// they are: signers learn of key changes from the zone's commits, and
	// without it a cached Ed25519 key would go on signing.
	return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.settings", Brand: brand,
		Domain: domain, RequestID: actor.RequestID, Detail: "ed25519 off: the pair retires"})
}

// SortKeys puts keys in the order every answer shows them
// (domainname.AllSelectors); the store's order, by name, puts
// selector1-ed25519 before selector2.
func SortKeys(keys []keystore.Key) {
	slices.SortStableFunc(keys, func(a, b keystore.Key) int {
		return domainname.SelectorRank(a.Selector) - domainname.SelectorRank(b.Selector)
	})
}

// PendingReason is the status reason of a pending-dns domain whose active
// selector's CNAME is not there yet; creation and the rotation loop both
// use it, so the entry does not change while nothing happens.
func PendingReason(selector string) string { return "waiting for the " + selector + " CNAME" }
