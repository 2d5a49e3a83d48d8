package rotation_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

// edCustomer is a customer whose RSA CNAMEs are in place and whose Ed25519
// CNAMEs appear when the test says so.
type edCustomer struct {
	mu sync.Mutex
	ed bool
}

func (c *edCustomer) set(ed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ed = ed
}

func (c *edCustomer) mode(_, sel string, _ time.Time) cnameMode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasSuffix(sel, "-ed25519") && !c.ed {
		return cnameMissing
	}
	return cnameOK
}

func ptr[T any](v T) *T { return &v }

// auditActions lists the actions of a domain's audit records, oldest first.
func auditActions(t *testing.T, e *env, domain string) []string {
	t.Helper()
	recs, err := e.store.Audit(context.Background(), keystore.AuditFilter{Domain: domain, Limit: keystore.MaxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(recs) - 1; i >= 0; i-- {
		out = append(out, recs[i].Action+" "+recs[i].Selector)
	}
	return out
}

// stepAt moves the clock to the domain's next look and runs one step.
func stepAt(t *testing.T, e *env, domain string) {
	t.Helper()
	if d := e.get(t, domain); d.NextCheckAt.After(e.clk.Now()) {
		e.clk.Add(d.NextCheckAt.Sub(e.clk.Now()))
	}
	e.step(t)
}

// TestEd25519OnAndOff adds an Ed25519 pair to a domain that has only RSA
// keys and retires it again, through the provisioning call the API's PUT
// makes, and lets the loop do its part: the added pair signs only once its
// CNAME checks out, and the retired pair stays published, never signing,
// through the retire grace, then leaves the zone.
func TestEd25519OnAndOff(t *testing.T) {
	for _, dialect := range []string{"", keystore.Postgres} {
		t.Run("dialect="+dialect, func(t *testing.T) {
			ctx := context.Background()
			cust := &edCustomer{}
			e := newEnv(t, dialect, edConfig(), cust.mode)
			e.brand(t, "acme")
			e.domain(t, "acme", "example.com", false)
			e.clk.Add(5 * time.Second)
			e.step(t)
			if d := e.get(t, "example.com"); d.Status != keystore.StatusActive {
				t.Fatalf("status %s before the change", d.Status)
			}
			serial0, _ := e.store.Serial(ctx)

			d, keys, created, err := e.prov.PutDomain(ctx, "acme", "example.com", provision.PutOptions{Ed25519: ptr(true)}, provision.Actor{Name: "brand:acme"})
			if err != nil || created || !d.Ed25519 || len(keys) != 4 {
				t.Fatalf("ed25519 on: %v, created %v, %+v, %d keys", err, created, d, len(keys))
			}
			km := e.keys(t, keystore.OwnerDomain, "example.com")
			for _, sel := range []string{provision.Selector1Ed25519, provision.Selector2Ed25519} {
				if k := km[sel]; k.State != keystore.StateNext || k.Algorithm != dkimkey.Ed25519 || len(k.PublicKey) == 0 {
					t.Errorf("%s after ed25519 on: %s %s", sel, k.State, k.Algorithm)
				}
			}
			if s, _ := e.store.Serial(ctx); s == serial0 {
				t.Error("the zone serial did not move: the new records are not published")
			}

			// The customer has not added the Ed25519 CNAMEs yet: nothing signs
			// with Ed25519, and the domain stays active.
			stepAt(t, e, "example.com")
			if k := e.keys(t, keystore.OwnerDomain, "example.com")[provision.Selector1Ed25519]; k.State != keystore.StateNext {
				t.Fatalf("selector1-ed25519 is %s before its CNAME exists", k.State)
			}
			if d := e.get(t, "example.com"); d.Status != keystore.StatusActive {
				t.Fatalf("status %s while only the Ed25519 CNAMEs are missing", d.Status)
			}
			cust.set(true)
			stepAt(t, e, "example.com")
			km = e.keys(t, keystore.OwnerDomain, "example.com")
			if km[provision.Selector1Ed25519].State != keystore.StateActive || km[provision.Selector2Ed25519].State != keystore.StateNext {
				t.Fatalf("after the Ed25519 CNAMEs: %s, %s", km[provision.Selector1Ed25519].State, km[provision.Selector2Ed25519].State)
			}

			// Off: both keys retire at once and never sign again.
			offAt := e.clk.Now()
			serial1, _ := e.store.Serial(ctx)
			d, _, _, err = e.prov.PutDomain(ctx, "acme", "example.com", provision.PutOptions{Ed25519: ptr(false)}, provision.Actor{Name: "brand:acme"})
			if err != nil || d.Ed25519 {
				t.Fatalf("ed25519 off: %v, %+v", err, d)
			}
			// Signers learn of key changes from the zone's commits: one that
			// missed this one would go on signing with the retired key.
			if s, _ := e.store.Serial(ctx); s == serial1 {
				t.Error("retiring the pair committed no zone change: signers keep the Ed25519 key")
			}
			for e.clk.Now().Before(offAt.Add(grace)) {
				km = e.keys(t, keystore.OwnerDomain, "example.com")
				for _, sel := range []string{provision.Selector1Ed25519, provision.Selector2Ed25519} {
					if k, ok := km[sel]; !ok || k.State != keystore.StateRetiring || len(k.PublicKey) == 0 {
						t.Fatalf("%s at %s, within the grace: present %v, %s", sel, e.clk.Now().Sub(offAt), ok, k.State)
					}
				}
				next := e.get(t, "example.com").NextCheckAt
				if next.After(offAt.Add(grace)) {
					t.Fatalf("next look %s is after the grace ends", next)
				}
				stepAt(t, e, "example.com")
			}
			km = e.keys(t, keystore.OwnerDomain, "example.com")
			if len(km) != 2 || km[provision.Selector1].State != keystore.StateActive || km[provision.Selector2].State != keystore.StateNext {
				t.Fatalf("after the grace: %v", km)
			}
			acts := strings.Join(auditActions(t, e, "example.com"), ", ")
			for _, want := range []string{"domain.settings ", "key.create selector1-ed25519", "key.activate selector1-ed25519",
				"key.retire selector2-ed25519", "key.destroy selector1-ed25519", "key.destroy selector2-ed25519"} {
				if !strings.Contains(acts, want) {
					t.Errorf("audit %q lacks %q", acts, want)
				}
			}
			// Quiet afterwards: a settled domain is not rewritten.
			before := e.get(t, "example.com")
			stepAt(t, e, "example.com")
			if after := e.get(t, "example.com"); !after.UpdatedAt.Equal(before.UpdatedAt) {
				t.Errorf("updatedAt moved on a quiet step: %s -> %s", before.UpdatedAt, after.UpdatedAt)
			}
		})
	}
}

// edConfig is the default policy with a short settled interval, so that the
// walk through a 7-day grace takes a handful of steps.
func edConfig() rotation.Config {
	return rotation.Config{PublishLeadTime: lead, RotationInterval: interval, RetireGrace: grace, SettledCheckInterval: 36 * time.Hour}
}

// TestKeyBitsApplyFromNextKey changes a domain's keyBits: the keys in place
// stay, and the next key generated for it has the new size.
func TestKeyBitsApplyFromNextKey(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", edConfig(), func(string, string, time.Time) cnameMode { return cnameOK })
	e.brand(t, "acme")
	e.domain(t, "acme", "example.com", false)
	e.clk.Add(5 * time.Second)
	e.step(t)
	before := e.keys(t, keystore.OwnerDomain, "example.com")
	d, _, _, err := e.prov.PutDomain(ctx, "acme", "example.com", provision.PutOptions{KeyBits: 3072}, provision.Actor{Name: "brand:acme"})
	if err != nil || d.KeyBits != 3072 {
		t.Fatalf("keyBits 3072: %v, %+v", err, d)
	}
	if after := e.keys(t, keystore.OwnerDomain, "example.com"); after[provision.Selector1].Fingerprint != before[provision.Selector1].Fingerprint ||
		after[provision.Selector2].Fingerprint != before[provision.Selector2].Fingerprint {
		t.Error("a keyBits change replaced keys in place")
	}
	// An emergency revokes selector1; after the grace its slot gets the
	// first key generated since the change.
	if _, _, err := e.rot.RequestRotation(ctx, "acme", "example.com", true, provision.Actor{Name: "brand:acme"}); err != nil {
		t.Fatal(err)
	}
	e.clk.Add(grace)
	e.step(t)
	k := e.keys(t, keystore.OwnerDomain, "example.com")[provision.Selector1]
	if k.State != keystore.StateNext || k.KeyBits != 3072 {
		t.Fatalf("fresh selector1: %s, %d bits", k.State, k.KeyBits)
	}
}
