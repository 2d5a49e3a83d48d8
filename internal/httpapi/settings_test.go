package httpapi

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/rotation"
)

// customerDNS is a recursive resolver on loopback: it answers the CNAMEs a
// test has put in place for the customers' selector names, and dkimd's own
// names from the store, as dkimd's DNS server would.
type customerDNS struct {
	store keystore.Store
	mu    sync.Mutex
	cname map[string]bool // selector1._domainkey.example.com: present
	addr  string
}

func startCustomerDNS(t *testing.T, store keystore.Store) *customerDNS {
	t.Helper()
	c := &customerDNS{store: store, cname: map[string]bool{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: c}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	c.addr = pc.LocalAddr().String()
	return c
}

func (c *customerDNS) set(name string, present bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cname[name] = present
}

func (c *customerDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	name := strings.ToLower(strings.TrimSuffix(q.Question[0].Name, "."))
	sel, domain, _ := strings.Cut(name, "._domainkey.")
	c.mu.Lock()
	present := c.cname[name]
	c.mu.Unlock()
	if !present {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	target := sel + "-" + strings.ReplaceAll(domain, ".", "-") + "._domainkey." + testZone
	m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60},
		Target: dns.Fqdn(target)})
	keys, err := c.store.Keys(context.Background(), keystore.OwnerDomain, domain)
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
	}
	for _, k := range keys {
		if k.Selector == sel {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(target), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: dkimkey.SplitTXT(dkimkey.TXTValue(k.Algorithm, k.PublicKey))})
		}
	}
	_ = w.WriteMsg(m)
}

// withRotation plugs a rotation service that checks through a customerDNS
// into e, on e's clock.
func withRotation(t *testing.T, e *env) (*rotation.Service, *customerDNS) {
	t.Helper()
	cdns := startCustomerDNS(t, e.store)
	checker, err := rotation.NewChecker(cdns.addr, testZone)
	if err != nil {
		t.Fatal(err)
	}
	checker.Timeout = time.Second
	rot, err := rotation.New(e.store.(rotation.Store), e.svc, checker, rotation.Config{}, e.clock.Now, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetRotator(rot)
	e.svc.RotationInterval = rot.Config().RotationInterval
	return rot, cdns
}

func selectorNames(e domainEntry) string {
	var out []string
	for _, s := range e.Selectors {
		out = append(out, s.Selector+":"+s.State)
	}
	return strings.Join(out, " ")
}

// TestPutRepeatChangesNothing: a provisioning script's retried PUT, before
// or after the rotation loop's first look at a domain whose CNAMEs are not
// there yet, answers the same entry and writes nothing.
func TestPutRepeatChangesNothing(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		rot, _ := withRotation(t, e)
		e.brand("acme", "spamtrap.dk")
		w := e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"))
		wantStatus(t, w, http.StatusCreated)
		first := w.Body.String()
		created := decode[domainEntry](t, w)
		if created.Rotation.NextRotationAt == nil {
			t.Error("a new entry shows no nextRotationAt")
		}
		e.clock.Add(5 * time.Second)
		if err := rot.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, body := range []string{"", `{}`, `{"keyBits":2048}`, `{"ed25519":false}`, `{"keyBits":2048,"ed25519":false}`} {
			t.Run("body="+body, func(t *testing.T) {
				before := takeSnapshot(t, store)
				r := e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")
				r.body = body
				w := e.do(r)
				wantStatus(t, w, http.StatusOK)
				if w.Body.String() != first {
					t.Errorf("repeat answered\n%s\nfirst PUT\n%s", w.Body.String(), first)
				}
				unchanged(t, store, before)
			})
		}
	})
}

// TestPutSettings changes an existing domain's settings through PUT.
func TestPutSettings(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		ctx := context.Background()
		e := newEnv(t, store)
		withRotation(t, e)
		e.brand("acme", "spamtrap.dk", strings.Repeat("x", 47)+".dk")
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), http.StatusCreated)
		put := func(body string) *domainEntry {
			t.Helper()
			r := e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")
			r.body = body
			w := e.do(r)
			wantStatus(t, w, http.StatusOK)
			got := decode[domainEntry](t, w)
			return &got
		}
		audits := func() int {
			recs, err := store.Audit(ctx, keystore.AuditFilter{Domain: "spamtrap.dk", Limit: keystore.MaxAuditPage})
			if err != nil {
				t.Fatal(err)
			}
			return len(recs)
		}

		t.Run("ed25519 on", func(t *testing.T) {
			n0 := audits()
			serial0, _ := store.Serial(ctx)
			e.clock.Add(time.Minute)
			got := put(`{"ed25519":true}`)
			if s := selectorNames(*got); s != "selector1:active selector2:next selector1-ed25519:next selector2-ed25519:next" {
				t.Errorf("selectors %s", s)
			}
			if audits() == n0 {
				t.Error("no audit record")
			}
			if s, _ := store.Serial(ctx); s == serial0 {
				t.Error("zone serial unchanged: the new TXT records are not published")
			}
			for _, s := range got.Selectors[2:] {
				if s.Algorithm != "ed25519" || !strings.HasPrefix(s.TXTValue, "v=DKIM1; k=ed25519; p=") || s.CNAME.Name != s.Selector+"._domainkey.spamtrap.dk" {
					t.Errorf("Ed25519 selector %+v", s)
				}
			}
			// The same order in every answer.
			for _, path := range []string{"/acme/spamtrap.dk", "/acme"} {
				w := e.do(e.as("acme", "GET", dkimPath+path))
				wantStatus(t, w, 200)
				var entry domainEntry
				if path == "/acme" {
					entry = decode[[]domainEntry](t, w)[0]
				} else {
					entry = decode[domainEntry](t, w)
				}
				if selectorNames(entry) != selectorNames(*got) {
					t.Errorf("GET %s: %s", path, selectorNames(entry))
				}
			}
			w := e.do(e.as("acme", "POST", dkimPath+"/acme/spamtrap.dk/rotate"))
			wantStatus(t, w, 202)
			if s := selectorNames(decode[domainEntry](t, w)); s != selectorNames(*got) {
				t.Errorf("rotate: %s", s)
			}
			w = e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk/dns"))
			wantStatus(t, w, 200)
			var sels []string
			for _, c := range decode[dnsReport](t, w).Selectors {
				sels = append(sels, c.Selector)
			}
			if s := strings.Join(sels, " "); s != "selector1 selector2 selector1-ed25519 selector2-ed25519" {
				t.Errorf("dns report order %s", s)
			}
		})
		t.Run("ed25519 on again", func(t *testing.T) {
			before := takeSnapshot(t, store)
			put(`{"ed25519":true}`)
			unchanged(t, store, before)
		})
		t.Run("keyBits", func(t *testing.T) {
			n0 := audits()
			got := put(`{"keyBits":4096}`)
			d, err := store.Domain(ctx, "spamtrap.dk")
			if err != nil || d.KeyBits != 4096 {
				t.Fatalf("stored keyBits %d, %v", d.KeyBits, err)
			}
			if audits() != n0+1 || got.Selectors[0].KeyBits != 2048 {
				t.Errorf("%d audit records, selector1 %d bits", audits()-n0, got.Selectors[0].KeyBits)
			}
		})
		t.Run("ed25519 off", func(t *testing.T) {
			got := put(`{"ed25519":false}`)
			if s := selectorNames(*got); s != "selector1:active selector2:next selector1-ed25519:retiring selector2-ed25519:retiring" {
				t.Errorf("selectors %s", s)
			}
		})
		t.Run("label too long for ed25519", func(t *testing.T) {
			long := strings.Repeat("x", 47) + ".dk"
			wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/"+long)), http.StatusCreated)
			before := takeSnapshot(t, store)
			r := e.as("acme", "PUT", dkimPath+"/acme/"+long)
			r.body = `{"ed25519":true}`
			wantError(t, e.do(r), 422, "LABEL_TOO_LONG", "")
			unchanged(t, store, before)
		})
		t.Run("bad keyBits", func(t *testing.T) {
			before := takeSnapshot(t, store)
			r := e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")
			r.body = `{"keyBits":1024}`
			wantError(t, e.do(r), 400, "INVALID_BODY", "keyBits")
			unchanged(t, store, before)
		})
	})
}

// TestCheckDNSUpdatesStatus: GET …/dns moves the entry to active as soon as
// the active selector's CNAME checks out, and to dns-error when it goes,
// with an audit record as the loop writes.
func TestCheckDNSUpdatesStatus(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		ctx := context.Background()
		e := newEnv(t, store)
		_, cdns := withRotation(t, e)
		e.brand("acme", "spamtrap.dk")
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), http.StatusCreated)
		status := func() domainEntry {
			t.Helper()
			w := e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk"))
			wantStatus(t, w, 200)
			return decode[domainEntry](t, w)
		}
		check := func() {
			t.Helper()
			wantStatus(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk/dns")), 200)
		}
		lastAudit := func() keystore.AuditRecord {
			t.Helper()
			recs, err := store.Audit(ctx, keystore.AuditFilter{Domain: "spamtrap.dk", Limit: 1})
			if err != nil || len(recs) != 1 {
				t.Fatalf("audit %v, %v", recs, err)
			}
			return recs[0]
		}

		before := takeSnapshot(t, store)
		check()
		unchanged(t, store, before) // still missing: nothing to change
		cdns.set("selector1._domainkey.spamtrap.dk", true)
		cdns.set("selector2._domainkey.spamtrap.dk", true)
		e.clock.Add(2 * time.Second)
		check()
		if got := status(); got.Status != "active" || got.StatusReason != "" {
			t.Fatalf("after the CNAMEs and a check: %s (%s)", got.Status, got.StatusReason)
		}
		if a := lastAudit(); a.Action != "domain.status" || a.Actor != "brand:acme" || !strings.Contains(a.Detail, "pending-dns -> active") {
			t.Errorf("audit %+v", a)
		}

		// An Ed25519 pair added now signs once the live check sees its CNAME.
		r := e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")
		r.body = `{"ed25519":true}`
		wantStatus(t, e.do(r), 200)
		check()
		if s := selectorNames(status()); s != "selector1:active selector2:next selector1-ed25519:next selector2-ed25519:next" {
			t.Fatalf("before the Ed25519 CNAMEs: %s", s)
		}
		cdns.set("selector1-ed25519._domainkey.spamtrap.dk", true)
		cdns.set("selector2-ed25519._domainkey.spamtrap.dk", true)
		check()
		if s := selectorNames(status()); s != "selector1:active selector2:next selector1-ed25519:active selector2-ed25519:next" {
			t.Fatalf("after the Ed25519 CNAMEs: %s", s)
		}
		if a := lastAudit(); a.Action != "key.activate" || a.Selector != "selector1-ed25519" {
			t.Errorf("audit %+v", a)
		}

		cdns.set("selector1._domainkey.spamtrap.dk", false)
		check()
		if got := status(); got.Status != "dns-error" || !strings.Contains(got.StatusReason, "selector1._domainkey.spamtrap.dk is missing") {
			t.Fatalf("after the CNAME went: %s (%s)", got.Status, got.StatusReason)
		}
		if a := lastAudit(); a.Action != "domain.status" || !strings.Contains(a.Detail, "active -> dns-error") {
			t.Errorf("audit %+v", a)
		}
	})
}
