package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// checkResult is one selector check; err is a resolver failure.
type checkResult struct {
	sc  SelectorCheck
	err error
}

// outcome is what one step decides for a domain, applied in one transaction.
type outcome struct {
	d       keystore.Domain
	put     []keystore.Key
	fresh   map[string]bool // selectors in put that carry a freshly minted key
	del     []keystore.Key  // slots the domain no longer has, whose grace is over
	audit   []keystore.AuditRecord
	rotated bool
	waiting string // why a due switch waits, for the metric
	checks  []checkResult
}

// stepDomain looks at one domain: replaces keys whose grace is over,
// schedules a due rotation, switches when the rules and the customer's DNS
// allow, and updates the status from the active selector's check. It reads,
// checks DNS and mints keys outside the transaction, then applies the
// outcome only if the domain is still at the version it read; otherwise it
// starts over.
func (s *Service) stepDomain(ctx context.Context, due keystore.Domain, now time.Time, brandInterval time.Duration) error {
	name := due.Name
	for attempt := range maxAttempts {
		d := due
		if attempt > 0 {
			var err error
			d, err = s.store.Domain(ctx, name)
			if errors.Is(err, keystore.ErrNotFound) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return err
			}
		}
		keys, err := s.store.Keys(ctx, keystore.OwnerDomain, name)
		if err != nil {
			return err
		}
		km := byselector(keys)
		ps := pairs(d)
		checks := map[string]checkResult{}
		want := []string{d.ActiveSelector}
		if ed := edSelector(d.ActiveSelector); d.Ed25519 && km[ed].State == keystore.StateNext {
			want = append(want, ed) // an added pair waits for its CNAME
		}
		switchDue := !d.PendingSwitchAt.IsZero() && !now.Before(d.PendingSwitchAt)
		rotationDue := d.PendingSwitchAt.IsZero() && !d.NextRotationAt.IsZero() && !now.Before(d.NextRotationAt)
		if switchDue || rotationDue {
			for _, p := range ps {
				if km[p[1]].State == keystore.StateNext {
					want = append(want, p[1])
				}
			}
		}
		for _, sel := range want {
			k, ok := km[sel]
			if !ok {
				continue
			}
			sc, err := s.checker.CheckKey(ctx, d, k)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			checks[sel] = checkResult{sc, err}
		}
		var others []string
		for _, p := range ps {
			others = append(others, p[1])
		}
		fresh, err := s.freshKeys(ctx, keystore.OwnerDomain, name, km, others, now, false, d.KeyBits)
		if err != nil {
			return err
		}
		o := s.planDomain(d, km, checks, fresh, now, s.interval(brandInterval))
		err = s.store.Update(ctx, func(tx keystore.Tx) error { return s.apply(ctx, tx, o) })
		switch {
		case errors.Is(err, keystore.ErrStale):
			s.m.failures.WithLabelValues("conflict").Inc()
			continue
		case errors.Is(err, keystore.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		s.record(o)
		return nil
	}
	return fmt.Errorf("rotation: %s: gave up after %d conflicting writes: %w", name, maxAttempts, keystore.ErrStale)
}

// apply writes an outcome inside tx. Fresh keys are stamped published at
// the transaction's own time, the earliest moment DNS can serve them, so a
// lead time counted from PublishedAt is never short.
func (s *Service) apply(ctx context.Context, tx keystore.Tx, o outcome) error {
	txNow := s.now()
	for _, k := range o.put {
		if o.fresh[k.Selector] && !o.d.PendingSwitchAt.IsZero() {
			o.d.PendingSwitchAt = laterOf(o.d.PendingSwitchAt, txNow.Add(s.cfg.PublishLeadTime))
		}
	}
	// UpdateDomain first: it refuses a domain changed since it was read
	// (ErrStale), before any key is touched.
	if _, err := tx.UpdateDomain(ctx, o.d); err != nil {
		return err
	}
	for _, k := range o.put {
		if o.fresh[k.Selector] {
			k.CreatedAt, k.PublishedAt = txNow, txNow
		}
		if err := tx.PutKey(ctx, k); err != nil {
			return err
		}
	}
	for _, k := range o.del {
		if err := tx.DeleteKey(ctx, k.OwnerKind, k.Owner, k.Selector); err != nil {
			return err
		}
	}
	for _, a := range o.audit {
		if err := tx.AppendAudit(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// planDomain is the state machine for one domain at now, given the checks
// made and the fresh keys minted for it. It is pure: apply writes it.
func (s *Service) planDomain(d keystore.Domain, km map[string]keystore.Key, checks map[string]checkResult, fresh map[string]keystore.Key,
	now time.Time, interval time.Duration) outcome {
	o := outcome{d: d, fresh: map[string]bool{}}
	nd := &o.d
	ps := pairs(d)
	rec := func(action string, k keystore.Key, detail string) {
		o.audit = append(o.audit, audit(now, Actor, action, d.Brand, k, detail))
	}
	domainRec := func(action, detail string) {
		o.audit = append(o.audit, keystore.AuditRecord{At: now, Actor: Actor.Name, Action: action, Brand: d.Brand, Domain: d.Name, Detail: detail})
	}
	for _, r := range checks {
		o.checks = append(o.checks, r)
	}

	// A slot whose retiring or revoked key has served its grace gets a
	// fresh next key; the old private key goes with the old row.
	for _, p := range ps {
		nk, ok := fresh[p[1]]
		if !ok {
			continue
		}
		rec("key.destroy", km[p[1]], "retire grace over: record replaced, private key destroyed")
		rec("key.create", nk, "next")
		o.put = append(o.put, nk)
		o.fresh[nk.Selector] = true
		km[p[1]] = nk
		if !nd.PendingSwitchAt.IsZero() {
			nd.PendingSwitchAt = laterOf(nd.PendingSwitchAt, s.eligibleAt(nk))
		}
	}

	// Slots the domain no longer has (its Ed25519 pair switched off) stay
	// published, never signing, through the retire grace, then leave the
	// zone with their private keys.
	var leaving []time.Time
	for _, sel := range sortedSelectors(km) {
		k := km[sel]
		if hasSelector(d, sel) {
			continue
		}
		if s.replaceDue(k, now) {
			o.del = append(o.del, k)
			rec("key.destroy", k, "retire grace over: record removed, private key destroyed")
			delete(km, sel)
			continue
		}
		leaving = append(leaving, k.RetiredAt.Add(s.cfg.RetireGrace))
	}

	// Schedule the automatic rotation.
	if nd.NextRotationAt.IsZero() {
		base := d.LastRotatedAt
		if base.IsZero() {
			base = km[d.ActiveSelector].ActivatedAt
		}
		if base.IsZero() {
			base = d.CreatedAt
		}
		nd.NextRotationAt = base.Add(interval)
	}
	if nd.PendingSwitchAt.IsZero() && !now.Before(nd.NextRotationAt) {
		at := now
		for _, p := range ps {
			at = laterOf(at, s.eligibleAt(km[p[1]]))
		}
		nd.PendingSwitchAt = at
		domainRec("rotation.schedule", fmt.Sprintf("rotation interval reached: switch to %s at %s", ps[0][1], at.Format(time.RFC3339)))
	}

	// Switch when it is due, every key about to sign has been published for
	// the lead time, and the customer's CNAME for each checks out.
	var waitReason string
	if !nd.PendingSwitchAt.IsZero() && !now.Before(nd.PendingSwitchAt) {
		ready := true
		for _, p := range ps {
			k := km[p[1]]
			if k.State != keystore.StateNext || now.Before(k.PublishedAt.Add(s.cfg.PublishLeadTime)) {
				ready = false
				nd.PendingSwitchAt = laterOf(nd.PendingSwitchAt, s.eligibleAt(k))
			}
		}
		if ready {
			for _, p := range ps {
				r, ok := checks[p[1]]
				switch {
				case !ok:
					o.waiting, waitReason = "unchecked", fmt.Sprintf("switch to %s waits for its DNS check", p[1])
				case r.err != nil:
					o.waiting, waitReason = "resolver", fmt.Sprintf("switch to %s waits: DNS check failed: %s", p[1], r.sc.Error)
				case r.sc.Verdict != VerdictOK:
					o.waiting, waitReason = r.sc.Verdict, fmt.Sprintf("switch to %s waits: %s is %s", p[1], r.sc.CNAMEName, r.sc.Verdict)
				default:
					continue
				}
				break
			}
			if o.waiting == "" {
				for _, p := range ps {
					old, nw := km[p[0]], km[p[1]]
					old.State, old.RetiredAt = keystore.StateRetiring, now
					nw.State, nw.ActivatedAt = keystore.StateActive, now
					o.put = append(o.put, old, nw)
					rec("key.retire", old, "retiring")
					rec("key.activate", nw, "active")
				}
				domainRec("domain.rotate", fmt.Sprintf("%s -> %s", ps[0][0], ps[0][1]))
				nd.ActiveSelector = ps[0][1]
				nd.LastRotatedAt, nd.NextRotationAt, nd.PendingSwitchAt = now, now.Add(interval), time.Time{}
				o.rotated = true
			}
		}
	}

	// An Ed25519 pair added to a domain that had keys already starts with
	// both keys next: the one in the active slot signs once its CNAME checks
	// out, so that no signature is made that the customer's DNS cannot
	// verify yet. Its name is new, so no cache holds an older record.
	edWaiting := false
	if ed := edSelector(d.ActiveSelector); d.Ed25519 && !o.rotated && km[ed].State == keystore.StateNext {
		if r, ok := checks[ed]; ok && r.err == nil && r.sc.Verdict == VerdictOK {
			k := km[ed]
			k.State, k.ActivatedAt = keystore.StateActive, now
			o.put = append(o.put, k)
			rec("key.activate", k, "active: its CNAME checks out")
		} else {
			edWaiting = true
		}
	}

	// The status follows the active selector's CNAME. A failed check
	// changes nothing but the retry time.
	r, checked := checks[nd.ActiveSelector]
	healthy := checked && r.err == nil && r.sc.Verdict == VerdictOK && o.waiting == "" && !edWaiting
	if checked && r.err == nil {
		nd.LastCheckedAt = now
		var statusPart string
		nd.Status, statusPart = statusAfter(nd.Status, r.sc)
		if nd.Status != d.Status {
			domainRec("domain.status", statusDetail(d.Status, nd.Status, statusPart))
		}
		nd.StatusReason = joinReasons(statusPart, waitReason)
	} else if waitReason != "" {
		nd.StatusReason = waitReason
	}
	if waitReason != "" && d.StatusReason != nd.StatusReason {
		domainRec("rotation.wait", waitReason)
	}

	next := now.Add(s.cfg.SettledCheckInterval)
	if healthy {
		nd.CheckFailures = 0
	} else {
		nd.CheckFailures++
		next = now.Add(s.backoff(nd.CheckFailures))
	}
	events := append([]time.Time{nd.NextRotationAt, nd.PendingSwitchAt}, leaving...)
	for _, p := range ps {
		if k := km[p[1]]; k.State == keystore.StateRetiring || k.State == keystore.StateRevoked {
			events = append(events, k.RetiredAt.Add(s.cfg.RetireGrace))
		}
	}
	nd.NextCheckAt = earliestAfter(now, next, events...)
	if len(o.put) > 0 || len(o.del) > 0 || nd.Status != d.Status || nd.StatusReason != d.StatusReason || !nd.PendingSwitchAt.Equal(d.PendingSwitchAt) ||
		!nd.NextRotationAt.Equal(d.NextRotationAt) {
		nd.UpdatedAt = now
	}
	return o
}

// backoff is the retry interval after n consecutive unhealthy checks.
func (s *Service) backoff(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	if n > s.cfg.FrequentRetries {
		return max(s.cfg.SettledCheckInterval, s.cfg.MaxBackoff)
	}
	d := s.cfg.MinBackoff
	for i := 1; i < n && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.cfg.MaxBackoff)
}

// statusAfter is the status a domain in status cur has after a check of its
// active selector, and the reason to show ("" when all is well). The rotation
// loop and the API's live check both use it.
func statusAfter(cur string, sc SelectorCheck) (string, string) {
	if sc.Verdict == VerdictOK {
		return keystore.StatusActive, ""
	}
	if cur == keystore.StatusActive {
		return keystore.StatusDNSError, fmt.Sprintf("%s is %s", sc.CNAMEName, sc.Verdict)
	}
	if cur == keystore.StatusPendingDNS && sc.Verdict == VerdictMissing {
		return cur, provision.PendingReason(sc.Selector)
	}
	part := fmt.Sprintf("%s is %s", sc.CNAMEName, sc.Verdict)
	if cur == keystore.StatusPendingDNS {
		part = "waiting for the CNAME: " + part
	}
	return cur, part
}

// statusDetail is the audit detail of a status change.
func statusDetail(from, to, reason string) string {
	return strings.TrimSpace(fmt.Sprintf("%s -> %s %s", from, to, reason))
}

// sortedSelectors lists km's selectors in answer order, so that the audit
// records of one step come in a stable order.
func sortedSelectors(km map[string]keystore.Key) []string {
	out := make([]string, 0, len(km))
	for sel := range km {
		out = append(out, sel)
	}
	slices.SortFunc(out, func(a, b string) int {
		if d := domainname.SelectorRank(a) - domainname.SelectorRank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return out
}
