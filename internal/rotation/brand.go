package rotation

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"dkimd/internal/keystore"
)

// stepBrand rotates a brand's fallback keys by the same rules as a domain's,
// without the CNAME gate: dkimd serves the brand's names itself. Brands have
// no version column, so the transaction checks that the slots are still
// what this step read, and otherwise leaves the work to the next tick.
func (s *Service) stepBrand(ctx context.Context, b keystore.Brand, now time.Time) error {
	keys, err := s.store.Keys(ctx, keystore.OwnerBrand, b.Name)
	if err != nil {
		return err
	}
	km := byselector(keys)
	act := ""
	for _, k := range keys {
		if k.State == keystore.StateActive {
			act = k.Selector
		}
	}
	if act == "" {
		return nil
	}
	oth := otherSelector(act)
	fresh, err := s.freshKeys(ctx, keystore.OwnerBrand, b.Name, km, []string{oth}, now, false, 0)
	if err != nil {
		return err
	}
	o, nk := km[oth], fresh[oth]
	switchNow := o.State == keystore.StateNext && !now.Before(o.PublishedAt.Add(s.cfg.PublishLeadTime)) &&
		!now.Before(km[act].ActivatedAt.Add(s.interval(b.RotationInterval)))
	if len(fresh) == 0 && !switchNow {
		return nil
	}
	rotated := false
	err = s.store.Update(ctx, func(tx keystore.Tx) error {
		cur, err := tx.Keys(ctx, keystore.OwnerBrand, b.Name)
		if err != nil {
			return err
		}
		if len(cur) != len(keys) {
			return fmt.Errorf("rotation: brand %s changed since read: %w", b.Name, keystore.ErrStale)
		}
		for _, k := range cur {
			if r := km[k.Selector]; r.State != k.State || r.Fingerprint != k.Fingerprint || !r.PublishedAt.Equal(k.PublishedAt) {
				return fmt.Errorf("rotation: brand %s changed since read: %w", b.Name, keystore.ErrStale)
			}
		}
		txNow := s.now()
		if len(fresh) > 0 {
			nk.CreatedAt, nk.PublishedAt = txNow, txNow
			if err := tx.PutKey(ctx, nk); err != nil {
				return err
			}
			for _, a := range []keystore.AuditRecord{
				audit(now, Actor, "key.destroy", b.Name, o, "retire grace over: record replaced, private key destroyed"),
				audit(now, Actor, "key.create", b.Name, nk, "next"),
			} {
				if err := tx.AppendAudit(ctx, a); err != nil {
					return err
				}
			}
		} else {
			old, nw := km[act], o
			old.State, old.RetiredAt = keystore.StateRetiring, now
			nw.State, nw.ActivatedAt = keystore.StateActive, now
			for _, k := range []keystore.Key{old, nw} {
				if err := tx.PutKey(ctx, k); err != nil {
					return err
				}
			}
			for _, a := range []keystore.AuditRecord{
				audit(now, Actor, "key.retire", b.Name, old, "retiring"),
				audit(now, Actor, "key.activate", b.Name, nw, "active"),
			} {
				if err := tx.AppendAudit(ctx, a); err != nil {
					return err
				}
			}
			rotated = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if rotated {
		s.m.rotations.WithLabelValues("brand").Inc()
		s.log.Info("rotated brand fallback key", slog.String("brand", b.Name), slog.String("selector", oth))
	}
	return nil
}
