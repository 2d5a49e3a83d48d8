package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

const day = 24 * time.Hour

// customer is one simulated customer's DNS over time.
type customer struct {
	kind string
	// from is when each selector's CNAME appears (0: never).
	from map[string]time.Duration
	// gaps are periods when every CNAME is gone.
	gaps [][2]time.Duration
	// wrongUntil: CNAMEs point elsewhere before this.
	wrongUntil time.Duration
}

func (c customer) mode(sel string, at time.Duration) cnameMode {
	base := strings.TrimSuffix(sel, "-ed25519")
	from, ok := c.from[base]
	if !ok || at < from {
		return cnameMissing
	}
	for _, g := range c.gaps {
		if at >= g[0] && at < g[1] {
			return cnameMissing
		}
	}
	if at < c.wrongUntil {
		return cnameWrong
	}
	return cnameOK
}

func newCustomer(i int, rng *rand.Rand) customer {
	always := map[string]time.Duration{provision.Selector1: 0, provision.Selector2: 0}
	jitter := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }
	switch i % 6 {
	case 0:
		return customer{kind: "prompt", from: always}
	case 1:
		at := 2*day + jitter(20*day)
		return customer{kind: "late", from: map[string]time.Duration{provision.Selector1: at, provision.Selector2: at}}
	case 2:
		g := 100*day + jitter(300*day)
		return customer{kind: "flaky", from: always, gaps: [][2]time.Duration{{g, g + 25*day + jitter(30*day)}, {g + 120*day, g + 122*day}}}
	case 3:
		return customer{kind: "selector2-late", from: map[string]time.Duration{provision.Selector1: 0, provision.Selector2: 200*day + jitter(100*day)}}
	case 4:
		return customer{kind: "wrong-first", from: always, wrongUntil: 5*day + jitter(30*day)}
	default:
		return customer{kind: "no-selector2", from: map[string]time.Duration{provision.Selector1: 0}}
	}
}

// TestSimulatedYears drives two years of rotation for a few hundred domains
// against a fake public DNS, stepping a fake clock, and checks the
// invariants of docs/rotation.md after every step.
func TestSimulatedYears(t *testing.T) {
	const years = 2
	// Without -race: 200 domains, a tick of a day, settled domains checked
	// every ten days. With -race (twenty times slower): 100 domains, a tick of three
	// days, monthly. Both keep the run to seconds; the daily production
	// default is tested in TestLifecycle.
	nDomains, tick, settled, retries := 200, day, 10*day, 20
	if raceEnabled {
		nDomains, tick, settled, retries = 100, 3*day, 30*day, 8
	}
	rng := rand.New(rand.NewPCG(4, 2))
	customers := map[string]customer{}
	e := newEnv(t, "", rotation.Config{
		SettledCheckInterval: settled,
		// Ticks are days apart, so the frequent retries are too.
		FrequentRetries: retries,
		BatchSize:       1000,
	}, func(domain, sel string, at time.Time) cnameMode {
		c, ok := customers[domain]
		if !ok {
			return cnameMissing
		}
		return c.mode(sel, at.Sub(start))
	})
	ctx := context.Background()
	e.brand(t, "acme")
	e.brand(t, "globex")
	names := make([]string, nDomains)
	for i := range nDomains {
		names[i] = fmt.Sprintf("d%03d.example", i)
		customers[names[i]] = newCustomer(i, rng)
	}
	for i, name := range names {
		brand := "acme"
		if i%2 == 1 {
			brand = "globex"
		}
		e.domain(t, brand, name, i%10 == 0)
	}
	// globex rotates every 90 days.
	if err := e.store.Update(ctx, func(tx keystore.Tx) error {
		b, err := tx.Brand(ctx, "globex")
		if err != nil {
			return err
		}
		b.RotationInterval = 90 * day
		_, err = tx.UpdateBrand(ctx, b)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// emergencies[domain] are the times of its emergency rotations.
	emergencies := map[string][]time.Time{}
	outages := map[time.Duration]resolverMode{40 * day: resolverTimeout, 150 * day: resolverLies, 153 * day: resolverLies, 302 * day: resolverTimeout}
	steps := int(years * 365 * float64(day) / float64(tick))
	for step := 0; step < steps; step++ {
		now := e.clk.Now()
		mode := resolverHonest
		for at, m := range outages {
			if el := now.Sub(start); el >= at && el < at+tick {
				mode = m
			}
		}
		e.dns.setMode(mode)
		// Brands ask for rotations and, rarely, emergencies.
		if step%int(10*day/tick) == 3 {
			name := names[rng.IntN(nDomains)]
			d := e.get(t, name)
			_, _, err := e.rot.RequestRotation(ctx, d.Brand, name, false, provision.Actor{Name: "brand:" + d.Brand})
			if err != nil && !errors.Is(err, rotation.ErrRotationPending) {
				t.Fatalf("request rotation of %s: %v", name, err)
			}
		}
		if step%int(24*day/tick) == 7 {
			name := names[rng.IntN(nDomains)]
			d := e.get(t, name)
			if _, _, err := e.rot.RequestRotation(ctx, d.Brand, name, true, provision.Actor{Name: "brand:" + d.Brand}); err != nil {
				t.Fatalf("emergency rotation of %s: %v", name, err)
			}
			emergencies[name] = append(emergencies[name], now)
		}
		e.step(t)
		checkInvariants(t, e, now, settled, customers, emergencies)
		if t.Failed() {
			t.Fatalf("invariants broken at step %d (%s)", step, now.Format(time.DateTime))
		}
		e.clk.Add(tick)
	}
	e.dns.setMode(resolverHonest)

	transitions := map[string]int{}
	// Liveness: domains whose DNS is in order rotated on schedule; those
	// without a selector2 CNAME wait and say why.
	for _, name := range names {
		d := e.get(t, name)
		c := customers[name]
		recs := auditAll(t, e, keystore.AuditFilter{Domain: name})
		rotations := 0
		for _, r := range recs {
			if r.Action == "domain.rotate" || r.Action == "domain.rotate-emergency" {
				rotations++
			}
		}
		for _, r := range recs {
			if r.Action == "domain.status" {
				transitions[strings.Fields(r.Detail)[0]+" -> "+strings.Fields(r.Detail)[2]]++
			}
		}
		switch c.kind {
		case "prompt", "wrong-first":
			iv := interval
			if d.Brand == "globex" {
				iv = 90 * day
			}
			// The first switch waits for the CNAME check; allow one less.
			min := int(years*365*float64(day)/float64(iv)) - 1
			if rotations < min {
				for i := len(recs) - 1; i >= 0; i-- {
					r := recs[i]
					t.Logf("  %s %s %s %s %s", r.At.Format(time.DateTime), r.Actor, r.Action, r.Selector, r.Detail)
				}
				t.Errorf("%s (%s, %s): %d rotations in two years, want ≥ %d", name, c.kind, d.Brand, rotations, min)
			}
		case "no-selector2":
			if len(emergencies[name]) == 0 && rotations != 0 {
				t.Errorf("%s (%s): rotated %d times without a selector2 CNAME", name, c.kind, rotations)
			}
			if len(emergencies[name]) == 0 && (!strings.Contains(d.StatusReason, "waits") || d.Status != keystore.StatusActive) {
				t.Errorf("%s (%s): status %s %q, want active and waiting", name, c.kind, d.Status, d.StatusReason)
			}
		}
	}
	for _, tr := range []string{"pending-dns -> active", "active -> dns-error", "dns-error -> active"} {
		if transitions[tr] == 0 {
			t.Errorf("no domain went %s: %v", tr, transitions)
		}
	}
	for _, b := range []string{"acme", "globex"} {
		recs := auditAll(t, e, keystore.AuditFilter{Brand: b})
		n := 0
		for _, r := range recs {
			if r.Action == "key.activate" && r.Domain == "" {
				n++
			}
		}
		if n < int(years*365*float64(day)/float64(interval))-1 {
			t.Errorf("brand %s fallback keys rotated %d times", b, n)
		}
	}
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"dkimd_rotation_rotations_total", map[string]string{"kind": "domain"}},
		{"dkimd_rotation_rotations_total", map[string]string{"kind": "emergency"}},
		{"dkimd_rotation_rotations_total", map[string]string{"kind": "brand"}},
		{"dkimd_rotation_waiting_total", map[string]string{"reason": "missing"}},
		{"dkimd_rotation_dns_checks_total", map[string]string{"verdict": "error"}},
		{"dkimd_rotation_dns_checks_total", map[string]string{"verdict": "wrong-target"}},
		{"dkimd_rotation_domains", map[string]string{"status": "active"}},
		{"dkimd_rotation_keys", map[string]string{"state": "retiring"}},
		{"dkimd_rotation_oldest_active_key_age_seconds", nil},
	} {
		if v := e.counter(t, m.name, m.labels); v <= 0 {
			t.Errorf("%s%v = %v", m.name, m.labels, v)
		}
	}
	for _, v := range []string{"ok", "missing", "wrong-target", "key-mismatch", "error"} {
		t.Logf("checks %s: %v", v, e.counter(t, "dkimd_rotation_dns_checks_total", map[string]string{"verdict": v}))
	}
	if age := e.counter(t, "dkimd_rotation_oldest_active_key_age_seconds", nil); age > float64((400 * day).Seconds()) {
		t.Logf("oldest active key is %.0f days old (domains without a selector2 CNAME never rotate)", age/86400)
	}
}

// auditAll reads every page of the audit log that f selects.
func auditAll(t *testing.T, e *env, f keystore.AuditFilter) []keystore.AuditRecord {
	t.Helper()
	var out []keystore.AuditRecord
	for {
		page, err := e.store.Audit(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) == 0 {
			return out
		}
		f.BeforeID = page[len(page)-1].ID
	}
}

// checkInvariants reads every domain and key and checks docs/rotation.md's rules.
func checkInvariants(t *testing.T, e *env, now time.Time, settled time.Duration, customers map[string]customer, emergencies map[string][]time.Time) {
	t.Helper()
	ctx := context.Background()
	domains := map[string]keystore.Domain{}
	for _, b := range []string{"acme", "globex"} {
		ds, err := e.store.Domains(ctx, b, "", 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			domains[d.Name] = d
		}
	}
	type row struct {
		owner, selector, state string
		published, activated   int64
		pubLen                 int
		destroyed              bool
	}
	rows, err := e.store.DB().QueryContext(ctx, `SELECT owner, selector, state, published_at, activated_at, length(public_key),
		sealed_private_key IS NULL FROM keys WHERE owner_kind = 'domain'`)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]map[string]row{}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.owner, &r.selector, &r.state, &r.published, &r.activated, &r.pubLen, &r.destroyed); err != nil {
			t.Fatal(err)
		}
		if keys[r.owner] == nil {
			keys[r.owner] = map[string]row{}
		}
		keys[r.owner][r.selector] = r
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(domains) != len(customers) {
		t.Fatalf("%d domains, want %d", len(domains), len(customers))
	}
	for name, d := range domains {
		ks := keys[name]
		want := []string{provision.Selector1, provision.Selector2}
		if d.Ed25519 {
			want = append(want, provision.Selector1Ed25519, provision.Selector2Ed25519)
		}
		if len(ks) != len(want) {
			t.Errorf("%s: %d slots, want %d", name, len(ks), len(want))
			continue
		}
		actives := 0
		for _, sel := range want {
			k, ok := ks[sel]
			if !ok {
				t.Errorf("%s: no key in %s", name, sel)
				continue
			}
			switch keystore.KeyState(k.state) {
			case keystore.StateRevoked:
				if k.pubLen != 0 || !k.destroyed {
					t.Errorf("%s/%s: revoked key still published or its private key kept", name, sel)
				}
				continue
			case keystore.StateActive:
				actives++
				wantSel := d.ActiveSelector
				if strings.HasSuffix(sel, "-ed25519") {
					wantSel += "-ed25519"
				}
				if sel != wantSel {
					t.Errorf("%s: %s active, but the domain's active selector is %s", name, sel, d.ActiveSelector)
				}
				published, activated := time.UnixMicro(k.published), time.UnixMicro(k.activated)
				initial := activated.Equal(d.CreatedAt) && published.Equal(d.CreatedAt)
				emergency := false
				for _, at := range emergencies[name] {
					emergency = emergency || activated.Equal(at)
				}
				if !initial && !emergency && activated.Before(published.Add(lead)) {
					t.Errorf("%s/%s: active since %v but published only at %v", name, sel, activated, published)
				}
				if activated.After(now) || published.After(now) {
					t.Errorf("%s/%s: times in the future", name, sel)
				}
			}
			if k.pubLen == 0 || k.destroyed {
				t.Errorf("%s/%s (%s): key not published or private key missing", name, sel, k.state)
			}
		}
		if wantActive := len(want) / 2; actives != wantActive {
			t.Errorf("%s: %d active keys, want %d", name, actives, wantActive)
		}
		// The status follows the active selector's CNAME as of the last check.
		if !d.LastCheckedAt.IsZero() {
			ok := customers[name].mode(d.ActiveSelector, d.LastCheckedAt.Sub(start)) == cnameOK
			if ok != (d.Status == keystore.StatusActive) {
				t.Errorf("%s: status %s (%q), but at its last check (%v) the %s CNAME was ok=%v",
					name, d.Status, d.StatusReason, d.LastCheckedAt, d.ActiveSelector, ok)
			}
		}
		if d.NextCheckAt.After(now.Add(settled)) {
			t.Errorf("%s: next check %v is too far ahead", name, d.NextCheckAt)
		}
	}
}
