package rotation_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

// allOK is a customer whose CNAMEs are all in place.
func allOK(string, string, time.Time) cnameMode { return cnameOK }

func TestLifecycle(t *testing.T) {
	for _, dialect := range []string{keystore.SQLite, keystore.Postgres} {
		t.Run(dialect, func(t *testing.T) { testLifecycle(t, dialect) })
	}
}

func testLifecycle(t *testing.T, dialect string) {
	e := newEnv(t, dialect, rotation.Config{}, allOK)
	e.brand(t, "acme")
	e.domain(t, "acme", "example.com", false)
	ctx := context.Background()

	e.step(t)
	d := e.get(t, "example.com")
	if d.Status != keystore.StatusActive || d.LastCheckedAt.IsZero() {
		t.Fatalf("after first check: status %s (%q), last checked %v", d.Status, d.StatusReason, d.LastCheckedAt)
	}
	if want := start.Add(interval); !d.NextRotationAt.Equal(want) {
		t.Fatalf("next rotation %v, want %v", d.NextRotationAt, want)
	}
	if want := start.Add(24 * time.Hour); !d.NextCheckAt.Equal(want) {
		t.Fatalf("next check %v, want %v (settled)", d.NextCheckAt, want)
	}
	old := e.keys(t, keystore.OwnerDomain, "example.com")

	e.clk.Add(interval)
	e.step(t)
	d = e.get(t, "example.com")
	k := e.keys(t, keystore.OwnerDomain, "example.com")
	if d.ActiveSelector != provision.Selector2 || k["selector2"].State != keystore.StateActive || k["selector1"].State != keystore.StateRetiring {
		t.Fatalf("after interval: active %s, keys %s/%s (%q)", d.ActiveSelector, k["selector1"].State, k["selector2"].State, d.StatusReason)
	}
	if !d.PendingSwitchAt.IsZero() || !d.NextRotationAt.Equal(e.clk.Now().Add(interval)) {
		t.Fatalf("after switch: pending %v next %v", d.PendingSwitchAt, d.NextRotationAt)
	}
	if want := e.clk.Now().Add(grace); !d.NextCheckAt.Equal(want) && d.NextCheckAt.After(want) {
		t.Fatalf("next check %v after the grace end %v", d.NextCheckAt, want)
	}

	e.clk.Add(grace)
	e.step(t)
	k = e.keys(t, keystore.OwnerDomain, "example.com")
	s1 := k["selector1"]
	if s1.State != keystore.StateNext || s1.Fingerprint == old["selector1"].Fingerprint || !s1.PublishedAt.Equal(e.clk.Now()) || s1.SealedPrivateKey == nil {
		t.Fatalf("after grace: selector1 %s published %v, same key %v", s1.State, s1.PublishedAt, s1.Fingerprint == old["selector1"].Fingerprint)
	}
	recs, err := e.store.Audit(ctx, keystore.AuditFilter{Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Action] = true
	}
	for _, a := range []string{"domain.status", "rotation.schedule", "key.retire", "key.activate", "domain.rotate", "key.destroy", "key.create"} {
		if !seen[a] {
			t.Errorf("no audit record %s", a)
		}
	}
	if got := e.counter(t, "dkimd_rotation_rotations_total", map[string]string{"kind": "domain"}); got != 1 {
		t.Errorf("rotations_total{domain} = %v", got)
	}
}

func TestFirstCheckAndBackoff(t *testing.T) {
	var mu sync.Mutex
	mode := cnameMissing
	set := func(m cnameMode) {
		mu.Lock()
		defer mu.Unlock()
		mode = m
	}
	e := newEnv(t, "", rotation.Config{}, func(string, string, time.Time) cnameMode {
		mu.Lock()
		defer mu.Unlock()
		return mode
	})
	e.brand(t, "acme")
	e.domain(t, "acme", "late.example", false)

	// The loop's first tick after the PUT checks the new domain.
	e.clk.Add(5 * time.Second)
	e.step(t)
	d := e.get(t, "late.example")
	// A CNAME still missing keeps the reason the PUT gave, so the entry does not change.
	if d.LastCheckedAt.IsZero() || d.Status != keystore.StatusPendingDNS || d.StatusReason != provision.PendingReason("selector1") {
		t.Fatalf("first check: %+v", d)
	}
	var gaps []time.Duration
	for range 10 {
		gaps = append(gaps, d.NextCheckAt.Sub(e.clk.Now()))
		e.clk.Add(d.NextCheckAt.Sub(e.clk.Now()))
		e.step(t)
		d = e.get(t, "late.example")
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
		32 * time.Minute, time.Hour, time.Hour, time.Hour}
	for i := range want {
		if gaps[i] != want[i] {
			t.Fatalf("back-off %v, want %v", gaps, want)
		}
	}

	// A resolver that times out or lies changes nothing but the retry time.
	set(cnameOK)
	for _, m := range []resolverMode{resolverTimeout, resolverLies} {
		e.dns.setMode(m)
		before := e.get(t, "late.example")
		e.clk.Add(before.NextCheckAt.Sub(e.clk.Now()))
		e.step(t)
		d = e.get(t, "late.example")
		if d.Status != before.Status || !d.LastCheckedAt.Equal(before.LastCheckedAt) || !d.NextCheckAt.After(e.clk.Now()) {
			t.Fatalf("resolver mode %d: status %s -> %s, last checked %v -> %v", m, before.Status, d.Status, before.LastCheckedAt, d.LastCheckedAt)
		}
	}
	e.dns.setMode(resolverHonest)
	e.clk.Add(d.NextCheckAt.Sub(e.clk.Now()))
	e.step(t)
	d = e.get(t, "late.example")
	if d.Status != keystore.StatusActive || d.StatusReason != "" || d.CheckFailures != 0 {
		t.Fatalf("CNAME in place: %s %q failures %d", d.Status, d.StatusReason, d.CheckFailures)
	}
	if got := e.counter(t, "dkimd_rotation_dns_checks_total", map[string]string{"verdict": "error"}); got != 2 {
		t.Errorf("dns_checks_total{error} = %v, want 2", got)
	}

	// The CNAME disappears: dns-error; it returns: active.
	set(cnameMissing)
	e.clk.Add(24 * time.Hour)
	e.step(t)
	if d = e.get(t, "late.example"); d.Status != keystore.StatusDNSError {
		t.Fatalf("CNAME gone: %s", d.Status)
	}
	set(cnameWrong)
	e.clk.Add(time.Minute)
	e.step(t)
	if d = e.get(t, "late.example"); d.Status != keystore.StatusDNSError || !strings.Contains(d.StatusReason, rotation.VerdictWrongTarget) {
		t.Fatalf("wrong target: %s %q", d.Status, d.StatusReason)
	}
	set(cnameOK)
	e.clk.Add(time.Hour)
	e.step(t)
	if d = e.get(t, "late.example"); d.Status != keystore.StatusActive {
		t.Fatalf("CNAME back: %s", d.Status)
	}
}

func TestSwitchWaitsForCNAME(t *testing.T) {
	var mu sync.Mutex
	sel2 := cnameMissing
	e := newEnv(t, "", rotation.Config{}, func(_, sel string, _ time.Time) cnameMode {
		mu.Lock()
		defer mu.Unlock()
		if sel == provision.Selector2 {
			return sel2
		}
		return cnameOK
	})
	e.brand(t, "acme")
	e.domain(t, "acme", "example.com", false)
	e.step(t)
	e.clk.Add(interval)
	e.step(t)
	d := e.get(t, "example.com")
	if d.ActiveSelector != provision.Selector1 || d.PendingSwitchAt.IsZero() || d.Status != keystore.StatusActive ||
		!strings.Contains(d.StatusReason, "selector2._domainkey.example.com is missing") {
		t.Fatalf("switch without CNAME: active %s pending %v status %s %q", d.ActiveSelector, d.PendingSwitchAt, d.Status, d.StatusReason)
	}
	if got := e.counter(t, "dkimd_rotation_waiting_total", map[string]string{"reason": "missing"}); got != 1 {
		t.Errorf("waiting_total{missing} = %v", got)
	}
	if !d.NextCheckAt.Equal(e.clk.Now().Add(30 * time.Second)) {
		t.Errorf("retry at %v, want back-off of 30s", d.NextCheckAt.Sub(e.clk.Now()))
	}
	recs, err := e.store.Audit(context.Background(), keystore.AuditFilter{Domain: "example.com", Limit: 5})
	if err != nil || len(recs) == 0 || recs[0].Action != "rotation.wait" {
		t.Fatalf("audit %+v %v", recs, err)
	}
	// Still missing: the wait is not audited again.
	e.clk.Add(30 * time.Second)
	e.step(t)
	if recs2, _ := e.store.Audit(context.Background(), keystore.AuditFilter{Domain: "example.com", Limit: 5}); recs2[0].ID != recs[0].ID {
		t.Errorf("repeated wait audited again: %+v", recs2[0])
	}

	mu.Lock()
	sel2 = cnameOK
	mu.Unlock()
	e.clk.Add(time.Hour)
	e.step(t)
	d = e.get(t, "example.com")
	if d.ActiveSelector != provision.Selector2 || d.StatusReason != "" || !d.PendingSwitchAt.IsZero() {
		t.Fatalf("CNAME arrived: active %s %q", d.ActiveSelector, d.StatusReason)
	}
}
