package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// ownDomain reads a brand's domain: keystore.ErrNotFound when it is unknown
// or belongs to another brand, so that the API cannot tell the two apart.
func ownDomain(ctx context.Context, r keystore.Reader, brand, domain string) (keystore.Domain, error) {
	d, err := r.Domain(ctx, domain)
	if err != nil {
		return keystore.Domain{}, err
	}
	if d.Brand != brand {
		return keystore.Domain{}, fmt.Errorf("rotation: %s: %w", domain, keystore.ErrNotFound)
	}
	return d, nil
}

// RequestRotation asks for a switch of a brand's domain. A normal request
// schedules the switch as soon as the rules allow (PendingSwitchAt: the
// next key's publication plus the lead time, or now) and the loop carries it
// out once the new selector's CNAME checks out; it is ErrRotationPending
// while one is already scheduled. An emergency revokes the active key at
// once (its record publishes an empty p=) and lets the other slot's key
// sign at once, ignoring the lead time and the CNAME gate, also while a
// normal rotation is pending. It returns the domain and its keys as
// committed.
func (s *Service) RequestRotation(ctx context.Context, brand, domain string, emergency bool, actor provision.Actor) (keystore.Domain, []keystore.Key, error) {
	if emergency {
		return s.emergency(ctx, brand, domain, actor)
	}
	var d keystore.Domain
	var keys []keystore.Key
	for range maxAttempts {
		err := s.store.Update(ctx, func(tx keystore.Tx) error {
			cur, err := ownDomain(ctx, tx, brand, domain)
			if err != nil {
				return err
			}
			if !cur.PendingSwitchAt.IsZero() {
				return fmt.Errorf("%w: switch to %s at %s", ErrRotationPending, otherSelector(cur.ActiveSelector),
					cur.PendingSwitchAt.Format(time.RFC3339))
			}
			if keys, err = tx.Keys(ctx, keystore.OwnerDomain, domain); err != nil {
				return err
			}
			km := byselector(keys)
			now := s.now()
			at := now
			for _, p := range pairs(cur) {
				at = laterOf(at, s.eligibleAt(km[p[1]]))
			}
			cur.PendingSwitchAt, cur.UpdatedAt = at, now
			if cur.NextCheckAt.After(at) {
				cur.NextCheckAt = at
			}
			if d, err = tx.UpdateDomain(ctx, cur); err != nil {
				return err
			}
			return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "rotation.request", Brand: brand,
				Domain: domain, RequestID: actor.RequestID,
				Detail: fmt.Sprintf("switch to %s at %s", otherSelector(cur.ActiveSelector), at.Format(time.RFC3339))})
		})
		if errors.Is(err, keystore.ErrStale) {
			continue
		}
		return d, keys, err
	}
	return keystore.Domain{}, nil, fmt.Errorf("rotation: request for %s: %w", domain, keystore.ErrStale)
}

// emergency revokes the active key pair and activates the other slots at
// once. A slot that holds no next key (its key is retiring or revoked, as
// right after a rotation) gets a fresh key that signs at once: in an
// emergency a key that verifiers may not see for a while beats one that is
// compromised. The new selector's CNAME is checked first so that the
// status says at once whether mail can be signed aligned.
func (s *Service) emergency(ctx context.Context, brand, domain string, actor provision.Actor) (keystore.Domain, []keystore.Key, error) {
	for range maxAttempts {
		d, err := ownDomain(ctx, s.store, brand, domain)
		if err != nil {
			return keystore.Domain{}, nil, err
		}
		keys, err := s.store.Keys(ctx, keystore.OwnerDomain, domain)
		if err != nil {
			return keystore.Domain{}, nil, err
		}
		km := byselector(keys)
		ps := pairs(d)
		var replace []string
		for _, p := range ps {
			if km[p[1]].State != keystore.StateNext {
				replace = append(replace, p[1])
			}
		}
		fresh, err := s.freshKeys(ctx, keystore.OwnerDomain, domain, km, replace, s.now(), true, d.KeyBits)
		if err != nil {
			return keystore.Domain{}, nil, err
		}
		for sel, k := range fresh {
			km[sel] = k
		}
		_, freshNew := fresh[ps[0][1]]
		var check checkResult
		check.sc, check.err = s.checker.CheckKey(ctx, d, km[ps[0][1]])
		var out keystore.Domain
		var outKeys []keystore.Key
		err = s.store.Update(ctx, func(tx keystore.Tx) error {
			cur, err := ownDomain(ctx, tx, brand, domain)
			if err != nil {
				return err
			}
			if cur.Version != d.Version {
				return fmt.Errorf("rotation: %s changed since read: %w", domain, keystore.ErrStale)
			}
			now := s.now()
			rec := func(action string, k keystore.Key, detail string) error {
				return tx.AppendAudit(ctx, audit(now, actor, action, brand, k, detail))
			}
			for _, p := range ps {
				old, nw := km[p[0]], km[p[1]]
				old.State, old.RetiredAt = keystore.StateRevoked, now
				old.PublicKey, old.SealedPrivateKey = []byte{}, nil
				if _, ok := fresh[p[1]]; ok {
					nw.CreatedAt, nw.PublishedAt = now, now
					if err := rec("key.create", nw, "emergency: fresh key signs at once"); err != nil {
						return err
					}
				}
				nw.State, nw.ActivatedAt = keystore.StateActive, now
				for _, k := range []keystore.Key{old, nw} {
					if err := tx.PutKey(ctx, k); err != nil {
						return err
					}
				}
				if err := rec("key.revoke", old, "emergency: published with empty p=, private key destroyed"); err != nil {
					return err
				}
				if err := rec("key.activate", nw, "emergency: lead time and CNAME gate ignored"); err != nil {
					return err
				}
			}
			cur.ActiveSelector = ps[0][1]
			cur.LastRotatedAt, cur.NextRotationAt, cur.PendingSwitchAt, cur.UpdatedAt = now, now.Add(s.interval(0)), time.Time{}, now
			if b, err := tx.Brand(ctx, brand); err == nil {
				cur.NextRotationAt = now.Add(s.interval(b.RotationInterval))
			}
			switch {
			case check.err != nil:
				cur.NextCheckAt = now // no verdict: let the loop look again at once
				cur.StatusReason = "emergency rotation; DNS check of the new selector failed: " + check.sc.Error
			case check.sc.Verdict == VerdictOK || freshNew && check.sc.Verdict == VerdictKeyMismatch:
				// A fresh key is published by this very commit: the check
				// could only see the CNAME in place and the old record.
				cur.Status, cur.StatusReason, cur.LastCheckedAt, cur.CheckFailures = keystore.StatusActive, "", now, 0
			default:
				if cur.Status == keystore.StatusActive {
					cur.Status = keystore.StatusDNSError
				}
				cur.StatusReason = fmt.Sprintf("emergency rotation: %s is %s", check.sc.CNAMEName, check.sc.Verdict)
				cur.LastCheckedAt, cur.CheckFailures = now, 1
				cur.NextCheckAt = now.Add(s.cfg.MinBackoff)
			}
			if cur.NextCheckAt.After(now.Add(s.cfg.RetireGrace)) {
				cur.NextCheckAt = now.Add(s.cfg.RetireGrace)
			}
			if out, err = tx.UpdateDomain(ctx, cur); err != nil {
				return err
			}
			if err := tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.rotate-emergency", Brand: brand,
				Domain: domain, RequestID: actor.RequestID, Detail: fmt.Sprintf("%s revoked, %s active", ps[0][0], ps[0][1])}); err != nil {
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
		s.m.rotations.WithLabelValues("emergency").Inc()
		s.log.Warn("emergency rotation", slog.String("domain", domain), slog.String("brand", brand),
			slog.String("selector", out.ActiveSelector), slog.String("request_id", actor.RequestID))
		return out, outKeys, nil
	}
	return keystore.Domain{}, nil, fmt.Errorf("rotation: emergency for %s: %w", domain, keystore.ErrStale)
}

// CheckDNS checks every selector of a brand's domain in public DNS, for the
// API; a resolver failure shows in the selector's Error. The check is live,
// and what the loop would conclude from it is written at once, audited as
// the loop's own changes are (docs/api.md: a brand that has just
// added its CNAMEs sees active right after): the status, when the active
// selector's verdict gives another, and the activation of an added Ed25519
// pair whose CNAME now checks out.
func (s *Service) CheckDNS(ctx context.Context, brand, domain string, actor provision.Actor) (DNSReport, error) {
	d, err := ownDomain(ctx, s.store, brand, domain)
	if err != nil {
		return DNSReport{}, err
	}
	keys, err := s.store.Keys(ctx, keystore.OwnerDomain, domain)
	if err != nil {
		return DNSReport{}, err
	}
	provision.SortKeys(keys)
	rep := DNSReport{Domain: domain, CheckedAt: s.now()}
	verdicts := map[string]checkResult{}
	for _, k := range keys {
		sc, err := s.checker.CheckKey(ctx, d, k)
		v := sc.Verdict
		if err != nil {
			v = "error"
		}
		s.m.checks.WithLabelValues(v).Inc()
		rep.Selectors = append(rep.Selectors, sc)
		verdicts[k.Selector] = checkResult{sc, err}
	}
	if err := s.liveUpdate(ctx, d, verdicts, actor); err != nil {
		return DNSReport{}, err
	}
	return rep, nil
}

// liveUpdate writes what a live check of every selector of d gives. A
// domain changed meanwhile is read again; one whose active selector moved
// is left to the loop, since the checks were of the other slots.
func (s *Service) liveUpdate(ctx context.Context, d keystore.Domain, checks map[string]checkResult, actor provision.Actor) error {
	active := d.ActiveSelector
	ok := func(sel string) bool {
		r, found := checks[sel]
		return found && r.err == nil && r.sc.Verdict == VerdictOK
	}
	for range maxAttempts {
		if d.ActiveSelector != active {
			return nil
		}
		status, reason := d.Status, d.StatusReason
		if r, found := checks[active]; found && r.err == nil {
			status, reason = statusAfter(d.Status, r.sc)
		}
		err := s.store.Update(ctx, func(tx keystore.Tx) error {
			now := s.now()
			ed := edSelector(active)
			var activate *keystore.Key
			if d.Ed25519 && ok(ed) {
				keys, err := tx.Keys(ctx, keystore.OwnerDomain, d.Name)
				if err != nil {
					return err
				}
				for i := range keys {
					if keys[i].Selector == ed && keys[i].State == keystore.StateNext {
						activate = &keys[i]
					}
				}
			}
			if status == d.Status && activate == nil {
				return nil
			}
			cur := d
			cur.UpdatedAt = now
			if status != d.Status {
				cur.Status, cur.StatusReason, cur.LastCheckedAt = status, reason, now
				if status == keystore.StatusActive {
					cur.CheckFailures = 0
				}
			}
			if _, err := tx.UpdateDomain(ctx, cur); err != nil {
				return err
			}
			if activate != nil {
				activate.State, activate.ActivatedAt = keystore.StateActive, now
				if err := tx.PutKey(ctx, *activate); err != nil {
					return err
				}
				if err := tx.AppendAudit(ctx, audit(now, actor, "key.activate", d.Brand, *activate, "active: its CNAME checks out")); err != nil {
					return err
				}
			}
			if status == d.Status {
				return nil
			}
			return tx.AppendAudit(ctx, keystore.AuditRecord{At: now, Actor: actor.Name, Action: "domain.status", Brand: d.Brand,
				Domain: d.Name, RequestID: actor.RequestID, Detail: statusDetail(d.Status, status, reason)})
		})
		if !errors.Is(err, keystore.ErrStale) {
			return err
		}
		if d, err = s.store.Domain(ctx, d.Name); err != nil {
			if errors.Is(err, keystore.ErrNotFound) {
				return nil
			}
			return err
		}
	}
	return nil
}
