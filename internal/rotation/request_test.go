package rotation_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

func TestRequestRotationConcurrent(t *testing.T) {
	for _, dialect := range keystoretest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, rotation.Config{}, allOK)
			e.brand(t, "acme")
			e.domain(t, "acme", "example.com", false)
			ctx := context.Background()
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _, errs[i] = e.rot.RequestRotation(ctx, "acme", "example.com", false, provision.Actor{Name: "brand:acme"})
				}()
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case errors.Is(err, rotation.ErrRotationPending):
				default:
					t.Errorf("unexpected error %v", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d requests won, want exactly 1: %v", won, errs)
			}
			recs, err := e.store.Audit(ctx, keystore.AuditFilter{Domain: "example.com"})
			if err != nil {
				t.Fatal(err)
			}
			requests := 0
			for _, r := range recs {
				if r.Action == "rotation.request" {
					requests++
				}
			}
			if requests != 1 {
				t.Fatalf("%d rotation.request audit records", requests)
			}
		})
	}
}

func TestRequestRotation(t *testing.T) {
	e := newEnv(t, "", rotation.Config{}, allOK)
	e.brand(t, "acme")
	e.brand(t, "other")
	e.domain(t, "acme", "example.com", true)
	ctx := context.Background()
	acme := provision.Actor{Name: "brand:acme", RequestID: "req-1"}

	t.Run("unknown or foreign domain is not found", func(t *testing.T) {
		for _, c := range []struct{ brand, domain string }{{"acme", "nope.example"}, {"other", "example.com"}} {
			if _, _, err := e.rot.RequestRotation(ctx, c.brand, c.domain, false, acme); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("%s/%s: %v, want ErrNotFound", c.brand, c.domain, err)
			}
			if _, _, err := e.rot.RequestRotation(ctx, c.brand, c.domain, true, acme); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("emergency %s/%s: %v, want ErrNotFound", c.brand, c.domain, err)
			}
			if _, err := e.rot.CheckDNS(ctx, c.brand, c.domain, acme); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("check %s/%s: %v, want ErrNotFound", c.brand, c.domain, err)
			}
		}
		if d := e.get(t, "example.com"); !d.PendingSwitchAt.IsZero() || d.Version != 1 {
			t.Fatalf("foreign request changed the domain: %+v", d)
		}
	})

	t.Run("normal request waits for the lead time", func(t *testing.T) {
		e.clk.Add(time.Hour)
		d, keys, err := e.rot.RequestRotation(ctx, "acme", "example.com", false, acme)
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(lead); !d.PendingSwitchAt.Equal(want) || len(keys) != 4 {
			t.Fatalf("pending switch at %v, want %v (next key's publication + lead)", d.PendingSwitchAt, want)
		}
		if _, _, err := e.rot.RequestRotation(ctx, "acme", "example.com", false, acme); !errors.Is(err, rotation.ErrRotationPending) {
			t.Fatalf("second request: %v", err)
		}
		e.step(t)
		if d := e.get(t, "example.com"); d.ActiveSelector != provision.Selector1 {
			t.Fatal("switched before the lead time")
		}
		e.clk.Add(lead)
		e.step(t)
		d = e.get(t, "example.com")
		k := e.keys(t, keystore.OwnerDomain, "example.com")
		if d.ActiveSelector != provision.Selector2 || k[provision.Selector2Ed25519].State != keystore.StateActive ||
			k[provision.Selector1Ed25519].State != keystore.StateRetiring {
			t.Fatalf("after lead: active %s, ed25519 %s/%s", d.ActiveSelector, k[provision.Selector1Ed25519].State, k[provision.Selector2Ed25519].State)
		}
	})

	t.Run("emergency revokes at once, also while a switch is pending", func(t *testing.T) {
		// selector1 is retiring now: a normal request waits for its fresh key.
		d, _, err := e.rot.RequestRotation(ctx, "acme", "example.com", false, acme)
		if err != nil {
			t.Fatal(err)
		}
		if want := e.clk.Now().Add(grace + lead); !d.PendingSwitchAt.Equal(want) {
			t.Fatalf("pending switch at %v, want %v", d.PendingSwitchAt, want)
		}
		before := e.keys(t, keystore.OwnerDomain, "example.com")
		d, keys, err := e.rot.RequestRotation(ctx, "acme", "example.com", true, acme)
		if err != nil {
			t.Fatal(err)
		}
		k := map[string]keystore.Key{}
		for _, key := range keys {
			k[key.Selector] = key
		}
		now := e.clk.Now()
		if d.ActiveSelector != provision.Selector1 || !d.PendingSwitchAt.IsZero() || d.Status != keystore.StatusActive {
			t.Fatalf("after emergency: active %s pending %v status %s %q", d.ActiveSelector, d.PendingSwitchAt, d.Status, d.StatusReason)
		}
		for _, sel := range []string{provision.Selector2, provision.Selector2Ed25519} {
			if r := k[sel]; r.State != keystore.StateRevoked || len(r.PublicKey) != 0 || r.SealedPrivateKey != nil {
				t.Errorf("%s: %s, public key %d bytes, sealed %v", sel, r.State, len(r.PublicKey), r.SealedPrivateKey != nil)
			}
		}
		for _, sel := range []string{provision.Selector1, provision.Selector1Ed25519} {
			if r := k[sel]; r.State != keystore.StateActive || !r.ActivatedAt.Equal(now) || r.Fingerprint == before[sel].Fingerprint {
				t.Errorf("%s: %s activated %v (a retiring slot gets a fresh key)", sel, r.State, r.ActivatedAt)
			}
		}
		if got := e.counter(t, "dkimd_rotation_rotations_total", map[string]string{"kind": "emergency"}); got != 1 {
			t.Errorf("rotations_total{emergency} = %v", got)
		}
		// The revoked slot gets a fresh next key after the grace.
		e.clk.Add(grace)
		e.step(t)
		k = e.keys(t, keystore.OwnerDomain, "example.com")
		if r := k[provision.Selector2]; r.State != keystore.StateNext || len(r.PublicKey) == 0 {
			t.Fatalf("revoked slot after grace: %s", r.State)
		}
	})

	t.Run("check dns reports every selector", func(t *testing.T) {
		rep, err := e.rot.CheckDNS(ctx, "acme", "example.com", acme)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Selectors) != 4 {
			t.Fatalf("%d selectors", len(rep.Selectors))
		}
		for _, sc := range rep.Selectors {
			if sc.Verdict != rotation.VerdictOK || sc.AnsweredTarget != sc.CNAMETarget || sc.AnsweredTXT == "" ||
				sc.CNAMEName != sc.Selector+"._domainkey.example.com" || sc.CNAMETarget != sc.Selector+"-example-com._domainkey."+zone {
				t.Errorf("%+v", sc)
			}
		}
	})
}

func TestCheckVerdicts(t *testing.T) {
	var mu sync.Mutex
	mode := cnameOK
	e := newEnv(t, "", rotation.Config{}, func(string, string, time.Time) cnameMode {
		mu.Lock()
		defer mu.Unlock()
		return mode
	})
	e.brand(t, "acme")
	e.domain(t, "acme", "example.com", false)
	ctx := context.Background()
	d := e.get(t, "example.com")
	k := e.keys(t, keystore.OwnerDomain, "example.com")
	checker, err := rotation.NewChecker(e.dns.addr, zone)
	if err != nil {
		t.Fatal(err)
	}
	other := k[provision.Selector2]
	mismatched := k[provision.Selector1]
	mismatched.PublicKey = other.PublicKey
	for _, c := range []struct {
		name string
		mode cnameMode
		key  keystore.Key
		want string
	}{
		{"ok", cnameOK, k[provision.Selector1], rotation.VerdictOK},
		{"missing", cnameMissing, k[provision.Selector1], rotation.VerdictMissing},
		{"wrong target", cnameWrong, k[provision.Selector1], rotation.VerdictWrongTarget},
		{"key mismatch", cnameOK, mismatched, rotation.VerdictKeyMismatch},
		{"chain through the customer's names", cnameChained, k[provision.Selector1], rotation.VerdictOK},
		{"our TXT copied, no CNAME", cnameDirectTXT, k[provision.Selector1], rotation.VerdictWrongTarget},
	} {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			mode = c.mode
			mu.Unlock()
			sc, err := checker.CheckKey(ctx, d, c.key)
			if err != nil || sc.Verdict != c.want {
				t.Fatalf("verdict %s (%v), want %s: %+v", sc.Verdict, err, c.want, sc)
			}
		})
	}
	t.Run("CNAME to a name our zone does not hold", func(t *testing.T) {
		mu.Lock()
		mode = cnameOK
		mu.Unlock()
		ghost := keystore.Domain{Name: "ghost.example", Label: "ghost-example"}
		sc, err := checker.CheckKey(ctx, ghost, k[provision.Selector1])
		if err != nil || sc.Verdict != rotation.VerdictKeyMismatch || sc.AnsweredTarget != sc.CNAMETarget {
			t.Fatalf("%+v %v", sc, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		e.dns.setMode(resolverTimeout)
		defer e.dns.setMode(resolverHonest)
		checker.Timeout = 100 * time.Millisecond
		sc, err := checker.CheckKey(ctx, d, k[provision.Selector1])
		if err == nil || sc.Error == "" {
			t.Fatalf("no error from a silent resolver: %+v", sc)
		}
	})
}

func TestBrandFallbackRotation(t *testing.T) {
	e := newEnv(t, "", rotation.Config{}, func(string, string, time.Time) cnameMode { return cnameMissing })
	e.brand(t, "acme")
	before := e.keys(t, keystore.OwnerBrand, "acme")
	e.clk.Add(interval - time.Hour)
	e.step(t)
	if k := e.keys(t, keystore.OwnerBrand, "acme"); k[provision.Selector1].State != keystore.StateActive {
		t.Fatal("brand key rotated early")
	}
	e.clk.Add(time.Hour)
	e.step(t)
	k := e.keys(t, keystore.OwnerBrand, "acme")
	if k[provision.Selector2].State != keystore.StateActive || k[provision.Selector1].State != keystore.StateRetiring {
		t.Fatalf("brand keys after interval: %s/%s", k[provision.Selector1].State, k[provision.Selector2].State)
	}
	e.clk.Add(grace)
	e.step(t)
	k = e.keys(t, keystore.OwnerBrand, "acme")
	if s1 := k[provision.Selector1]; s1.State != keystore.StateNext || s1.Fingerprint == before[provision.Selector1].Fingerprint {
		t.Fatalf("brand selector1 after grace: %s", s1.State)
	}
	if got := e.counter(t, "dkimd_rotation_rotations_total", map[string]string{"kind": "brand"}); got != 1 {
		t.Errorf("rotations_total{brand} = %v", got)
	}
}
