package signer_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/cutproxy"
	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// signVerified signs a message from domain and checks each signature
// through DNS with go-msgauth.
func signVerified(t *testing.T, s *signer.Signer, dns *signertest.DNS, domain string) signer.Result {
	t.Helper()
	msg := message(domain, "Hello,\r\n\r\nsigned while the store was away.\r\n")
	res, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatalf("sign %s: %v", domain, err)
	}
	vs := signertest.VerifyGo(t, dns, []byte(res.Header()+msg))
	if len(vs) != len(res.Signatures) {
		t.Fatalf("%s: go-msgauth saw %d signatures, want %d", domain, len(vs), len(res.Signatures))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != res.Domain {
			t.Fatalf("%s: verification d=%s: %v", domain, v.Domain, v.Err)
		}
	}
	return res
}

// wantStoreError checks that a message from domain is not signed, and fails
// as dkimd's fault (503), not as a refusal (422): with the store away the
// signer cannot know whether the domain is signable.
func wantStoreError(t *testing.T, s *signer.Signer, domain string) {
	t.Helper()
	_, err := s.Sign(context.Background(), strings.NewReader(message(domain, "x\r\n")))
	if err == nil || errors.As(err, new(*signer.Refusal)) {
		t.Fatalf("%s with the store away: %v, want a store error", domain, err)
	}
}

// TestOutageDirectorySignsUnresolvedDomains: the store goes away before any
// message was signed; every maildomain of one brand is still signed, with its
// brand's fallback key, and the signatures verify through DNS.
func TestOutageDirectorySignsUnresolvedDomains(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s := newSigner(t, f, reg)
	if err := s.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Store.Close(); err != nil {
		t.Fatal(err)
	}
	acme, edco := signertest.Brand+"."+signertest.Zone, signertest.BrandEd+"."+signertest.Zone
	for _, c := range []struct {
		from, d   string
		selectors string
	}{
		{signertest.FallbackRSA, acme, "selector1"},
		{signertest.FallbackEd, edco, "selector1,selector1-ed25519"},
		// Active with its own key, but that was never read: degraded to
		// the brand's key, valid if not aligned.
		{signertest.AlignedRSA, acme, "selector1"},
		{signertest.Pending, acme, "selector1"},
	} {
		res := signVerified(t, s, f.DNS, c.from)
		if res.Mode != signer.ModeFallback || res.Domain != c.d || strings.Join(res.Selectors(), ",") != c.selectors {
			t.Errorf("%s: mode %s d=%s s=%v, want fallback d=%s s=%s", c.from, res.Mode, res.Domain, res.Selectors(), c.d, c.selectors)
		}
	}
	// Nobody's, or two brands': the directory cannot vouch for them.
	wantStoreError(t, s, signertest.Unknown)
	wantStoreError(t, s, signertest.SharedDomain)
	wantMetric(t, reg, "dkimd_sign_outage_fallback_total", 4, "")
	wantMetric(t, reg, "dkimd_sign_stale_plans_total", 0, "")
}

// TestOutageWithoutDirectory: a signer that has not loaded its directory
// fails unresolved domains during an outage, as before.
func TestOutageWithoutDirectory(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	if err := f.Store.Close(); err != nil {
		t.Fatal(err)
	}
	wantStoreError(t, s, signertest.FallbackRSA)
	if err := s.Warm(context.Background()); err == nil {
		t.Fatal("Warm on a closed store: no error")
	}
	wantStoreError(t, s, signertest.FallbackRSA)
}

// TestOutageDirectoryPostgres cuts a Postgres store off mid-run through a
// TCP proxy: a maildomain never signed before is signed with its brand's key
// while it is away, with its own aligned key once it is back.
func TestOutageDirectoryPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, err := url.Parse(keystoretest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := cutproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	store := keystoretest.OpenPostgres(t, u.String())
	svc := provisiontest.Service(t, store, signertest.Zone, nil)
	actor := provision.Actor{Name: "test"}
	const late = "late.example"
	if _, err := svc.CreateBrand(ctx, signertest.Brand, actor); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMaildomain(ctx, signertest.Brand, late, actor); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := svc.CreateDomain(ctx, signertest.Brand, late, provision.DomainOptions{}, actor); err != nil {
		t.Fatal(err)
	}
	signertest.SetStatus(t, store, late, keystore.StatusActive)
	dns := signertest.StartDNS(t, store, signertest.Zone)
	dns.AddCustomerCNAMEs(late)

	reg := prometheus.NewRegistry()
	s, err := signer.New(signer.Options{Store: store, Box: svc.Box, Zone: signertest.Zone,
		Log: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Warm(ctx); err != nil {
		t.Fatal(err)
	}

	proxy.SetDown(true)
	res := signVerified(t, s, dns, late)
	if res.Mode != signer.ModeFallback || res.Domain != signertest.Brand+"."+signertest.Zone {
		t.Fatalf("store away: mode %s d=%s, want fallback d=%s.%s", res.Mode, res.Domain, signertest.Brand, signertest.Zone)
	}
	wantStoreError(t, s, signertest.Unknown)
	wantMetric(t, reg, "dkimd_sign_outage_fallback_total", 1, "")

	proxy.SetDown(false)
	res = signVerified(t, s, dns, late)
	if res.Mode != signer.ModeAligned || res.Domain != late {
		t.Fatalf("store back: mode %s d=%s, want aligned d=%s", res.Mode, res.Domain, late)
	}
	wantMetric(t, reg, "dkimd_sign_outage_fallback_total", 1, "after the store came back")
}

// TestKeepWarmFollowsChanges: a brand key added (a key change, announced by
// Invalidate) reaches the directory at the next check; a maildomain added
// (announced by nothing) at the next full reload.
func TestKeepWarmFollowsChanges(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(refresh time.Duration) *signer.Signer {
		s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
			Log: slog.New(slog.DiscardHandler), MaxAge: 10 * time.Millisecond, DirectoryRefresh: refresh})
		if err != nil {
			t.Fatal(err)
		}
		f.Store.Watch(context.Background(), s.Invalidate)
		wg.Go(func() { s.KeepWarm(ctx) })
		return s
	}
	keysOnly := start(time.Hour)
	full := start(30 * time.Millisecond)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	acme := signertest.Brand + "." + signertest.Zone
	waitFor("the first load", func() bool {
		d1, n1 := signer.OutagePlan(keysOnly, signertest.FallbackRSA)
		d2, n2 := signer.OutagePlan(full, signertest.FallbackRSA)
		return d1 == acme && n1 == 1 && d2 == acme && n2 == 1
	})

	// acme gets an Ed25519 fallback key, and a new maildomain.
	actx := context.Background()
	edKey, err := f.Svc.NewKey(actx, keystore.OwnerBrand, signertest.Brand, provision.Selector1Ed25519, dkimkey.Ed25519, 0, keystore.StateActive)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Store.Update(actx, func(tx keystore.Tx) error {
		return tx.PutKey(actx, edKey)
	}); err != nil {
		t.Fatal(err)
	}
	const added = "added.example"
	if err := f.Svc.AddMaildomain(actx, signertest.Brand, added, provision.Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor("the new key and maildomain", func() bool {
		_, n1 := signer.OutagePlan(keysOnly, signertest.FallbackRSA)
		d2, n2 := signer.OutagePlan(full, added)
		return n1 == 2 && d2 == acme && n2 == 2
	})
	if d, _ := signer.OutagePlan(keysOnly, added); d != "" {
		t.Fatalf("a maildomain reached the directory before its refresh: d=%s", d)
	}
	// The zone server picks the key up from the store in the background:
	// it must have it before the store goes away, or nothing verifies.
	waitFor("the zone to publish the new key", func() bool {
		_, err := f.DNS.LookupTXT(provision.Selector1Ed25519 + "._domainkey." + acme)
		return err == nil
	})

	// And they sign, and verify, with the store away.
	cancel()
	wg.Wait()
	if err := f.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if res := signVerified(t, keysOnly, f.DNS, signertest.FallbackRSA); res.Domain != acme || len(res.Signatures) != 2 {
		t.Fatalf("after the key change: d=%s s=%v", res.Domain, res.Selectors())
	}
	if res := signVerified(t, full, f.DNS, added); res.Mode != signer.ModeFallback || res.Domain != acme || len(res.Signatures) != 2 {
		t.Fatalf("added maildomain: mode %s d=%s s=%v", res.Mode, res.Domain, res.Selectors())
	}
	wantStoreError(t, keysOnly, added)
}
