package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// CreateBrand creates a brand with a fresh secret and its fallback keys
// (selector1 active, selector2 next), and returns the secret: the only time
// it is ever seen, since only its hash is stored.
func (s *Service) CreateBrand(ctx context.Context, name string, actor Actor) (string, error) {
	if err := domainname.ValidBrand(name); err != nil {
		return "", err
	}
	secret, err := NewSecret()
	if err != nil {
		return "", err
	}
	hash, err := HashSecret(secret)
	if err != nil {
		return "", err
	}
	var keys []keystore.Key
	for _, sl := range []slot{
		{Selector1, dkimkey.RSA, dkimkey.DefaultRSABits, keystore.StateActive},
		{Selector2, dkimkey.RSA, dkimkey.DefaultRSABits, keystore.StateNext},
	} {
		k, err := s.NewKey(ctx, keystore.OwnerBrand, name, sl.selector, sl.alg, sl.bits, sl.state)
		if err != nil {
			return "", err
		}
		keys = append(keys, k)
	}
	now := s.Now()
	err = s.Store.Update(ctx, func(tx keystore.Tx) error {
		if _, err := tx.CreateBrand(ctx, keystore.Brand{Name: name, SecretHash: hash, CreatedAt: now, UpdatedAt: now}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.PutKey(ctx, k); err != nil {
				return err
			}
			if err := tx.AppendAudit(ctx, auditKey(now, actor, "key.create", name, k)); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "brand.create", Brand: name, RequestID: actor.RequestID})
	})
	if err != nil {
		return "", fmt.Errorf("provision: create brand %s: %w", name, err)
	}
	return secret, nil
}

// RotateSecret replaces a brand's secret and returns the new one.
func (s *Service) RotateSecret(ctx context.Context, name string, actor Actor) (string, error) {
	secret, err := NewSecret()
	if err != nil {
		return "", err
	}
	hash, err := HashSecret(secret)
	if err != nil {
		return "", err
	}
	now := s.Now()
	err = s.Store.Update(ctx, func(tx keystore.Tx) error {
		b, err := tx.Brand(ctx, name)
		if err != nil {
			return err
		}
		b.SecretHash, b.UpdatedAt = hash, now
		if _, err := tx.UpdateBrand(ctx, b); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "brand.rotate-secret", Brand: name, RequestID: actor.RequestID})
	})
	if err != nil {
		return "", fmt.Errorf("provision: rotate secret of %s: %w", name, err)
	}
	return secret, nil
}

// DeleteBrand removes a brand, its maildomains and fallback keys. It refuses
// (keystore.ErrConflict) while the brand still holds DKIM domains, so that
// no customer's signing breaks by accident.
func (s *Service) DeleteBrand(ctx context.Context, name string, actor Actor) error {
	now := s.Now()
	err := s.Store.Update(ctx, func(tx keystore.Tx) error {
		if err := tx.DeleteBrand(ctx, name); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "brand.delete", Brand: name, RequestID: actor.RequestID})
	})
	if err != nil {
		return fmt.Errorf("provision: delete brand %s: %w", name, err)
	}
	return nil
}

// AddMaildomain registers a maildomain for a brand; domain must be normalised.
func (s *Service) AddMaildomain(ctx context.Context, brand, domain string, actor Actor) error {
	now := s.Now()
	err := s.Store.Update(ctx, func(tx keystore.Tx) error {
		if _, err := tx.Brand(ctx, brand); err != nil {
			return err
		}
		if err := tx.AddMaildomain(ctx, brand, domain); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "maildomain.add", Brand: brand, Domain: domain, RequestID: actor.RequestID})
	})
	if err != nil {
		return fmt.Errorf("provision: add maildomain %s to %s: %w", domain, brand, err)
	}
	return nil
}

// RemoveMaildomain unregisters a maildomain. While the brand holds DKIM keys
// for it, it is refused with a *HasKeysError (the keys would stay published
// and the domain's mail unsignable); with force it first deletes them as
// DeleteDomain does, in the same transaction.
func (s *Service) RemoveMaildomain(ctx context.Context, brand, domain string, force bool, actor Actor) error {
	now := s.Now()
	err := s.Store.Update(ctx, func(tx keystore.Tx) error {
		// Checked in the transaction that removes it, so that a PUT
		// cannot slip keys in between the check and the removal.
		d, err := tx.Domain(ctx, domain)
		switch {
		case errors.Is(err, keystore.ErrNotFound):
		case err != nil:
			return err
		case d.Brand == brand:
			keys, err := tx.Keys(ctx, keystore.OwnerDomain, domain)
			if err != nil {
				return err
			}
			if !force {
				return &HasKeysError{Domain: domain, Selectors: selectorsOf(keys)}
			}
			if err := deleteDomainTx(ctx, tx, now, brand, d.Name, keys, actor); err != nil {
				return err
			}
		}
		if err := tx.RemoveMaildomain(ctx, brand, domain); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "maildomain.remove", Brand: brand, Domain: domain, RequestID: actor.RequestID})
	})
	if err != nil {
		return fmt.Errorf("provision: remove maildomain %s from %s: %w", domain, brand, err)
	}
	return nil
}

// ErrHasKeys is the removal of a maildomain whose DKIM keys still exist.
var ErrHasKeys = errors.New("maildomain holds DKIM keys")

// HasKeysError names the selectors of a maildomain that was not removed
// because it holds keys; it matches ErrHasKeys.
type HasKeysError struct {
	Domain    string
	Selectors []string
}

func (e *HasKeysError) Error() string {
	return fmt.Sprintf("maildomain %s holds DKIM keys (%s)", e.Domain, strings.Join(e.Selectors, ", "))
}

func (e *HasKeysError) Is(target error) bool { return target == ErrHasKeys }

func selectorsOf(keys []keystore.Key) []string {
	sels := make([]string, len(keys))
	for i, k := range keys {
		sels[i] = k.Selector
	}
	slices.SortFunc(sels, func(a, b string) int { return domainname.SelectorRank(a) - domainname.SelectorRank(b) })
	return sels
}
