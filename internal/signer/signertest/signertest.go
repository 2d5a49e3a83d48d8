// Package signertest gives the signing tests (signer, signhttp, milter) a
// real keystore with provisioned brands and domains, dkimd's own DNS server
// (package zone) publishing their keys, a loopback server for the customers'
// CNAMEs into the zone, and verifiers that resolve through both as the
// internet would: go-msgauth and Debian's dkimpy.
package signertest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/zone"
)

// Zone is the service zone of the fixture.
const Zone = "oxcloud.zone"

// The fixture's brands and From domains.
const (
	Brand   = "acme" // RSA fallback key only
	BrandEd = "edco" // RSA and Ed25519 fallback keys

	AlignedRSA   = "aligned-rsa.example"  // acme, active, RSA
	AlignedEd    = "aligned-ed.example"   // acme, active, RSA + Ed25519
	FallbackRSA  = "fallback-rsa.example" // acme maildomain without keys
	FallbackEd   = "fallback-ed.example"  // edco maildomain without keys
	Pending      = "pending.example"      // acme, keys but pending-dns: falls back
	Unknown      = "stranger.example"     // nobody's
	SharedDomain = "shared.example"       // maildomain of both brands
)

// Fixture is a store with the brands and domains above and a DNS server
// publishing them.
type Fixture struct {
	Store *keystore.SQL
	Svc   *provision.Service
	DNS   *DNS
}

// New provisions the fixture on a fresh SQLite store.
func New(t testing.TB) *Fixture {
	t.Helper()
	ctx := context.Background()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, Zone, nil)
	actor := provision.Actor{Name: "test"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{Brand, BrandEd} {
		_, err := svc.CreateBrand(ctx, b, actor)
		must(err)
	}
	// A brand Ed25519 fallback key, as the brand API's option would add it.
	edKey, err := svc.NewKey(ctx, keystore.OwnerBrand, BrandEd, provision.Selector1Ed25519, dkimkey.Ed25519, 0, keystore.StateActive)
	must(err)
	must(store.Update(ctx, func(tx keystore.Tx) error {
		return tx.PutKey(ctx, edKey)
	}))
	for _, m := range [][2]string{
		{Brand, AlignedRSA}, {Brand, AlignedEd}, {Brand, FallbackRSA}, {Brand, Pending},
		{BrandEd, FallbackEd}, {Brand, SharedDomain}, {BrandEd, SharedDomain},
	} {
		must(svc.AddMaildomain(ctx, m[0], m[1], actor))
	}
	for _, d := range []struct {
		name    string
		ed      bool
		confirm bool
	}{{AlignedRSA, false, true}, {AlignedEd, true, true}, {Pending, false, false}} {
		_, _, _, err := svc.CreateDomain(ctx, Brand, d.name, provision.DomainOptions{Ed25519: d.ed}, actor)
		must(err)
		if d.confirm {
			SetStatus(t, store, d.name, keystore.StatusActive)
		}
	}
	f := &Fixture{Store: store, Svc: svc, DNS: StartDNS(t, store, Zone)}
	for _, d := range []string{AlignedRSA, AlignedEd, Pending} {
		f.DNS.AddCustomerCNAMEs(d)
	}
	return f
}

// SetStatus sets a domain's status as the DNS check would.
func SetStatus(t testing.TB, store keystore.Store, name, status string) {
	t.Helper()
	ctx := context.Background()
	err := store.Update(ctx, func(tx keystore.Tx) error {
		d, err := tx.Domain(ctx, name)
		if err != nil {
			return err
		}
		d.Status = status
		_, err = tx.UpdateDomain(ctx, d)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DNS is what a verifier on the internet resolves through: dkimd's own
// authoritative server (package zone) for the zone's TXT records, and a
// loopback server standing for the customers' DNS, which holds their
// `selectorN._domainkey.<domain>` CNAMEs into the zone.
type DNS struct {
	Addr     string // the customers' DNS, host:port, UDP and TCP
	ZoneAddr string // dkimd's zone server, host:port, UDP and TCP
	Zone     string
	Server   *zone.Server

	mu    sync.Mutex
	cname map[string]string // fqdn -> fqdn
}

// StartDNS starts dkimd's zone server on store and the customers' server;
// both stop at test cleanup. Commits to store reach the zone at once.
func StartDNS(t testing.TB, store *keystore.SQL, zoneName string) *DNS {
	t.Helper()
	d := &DNS{Zone: zoneName, cname: make(map[string]string)}
	srv, err := zone.New(zone.Options{
		Params: zone.Params{
			Zone: zoneName, NS: []string{"ns1." + zoneName}, SOAMbox: "hostmaster." + zoneName,
			NSAddrs: map[string][]netip.Addr{"ns1." + zoneName: {netip.MustParseAddr("127.0.0.1")}},
			Refresh: 4 * time.Hour, Retry: time.Hour, Expire: 14 * 24 * time.Hour, Minimum: 300 * time.Second, TTL: time.Hour,
		},
		Addr: "127.0.0.1:0", UDPSockets: 1,
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	store.Watch(context.Background(), srv.Kick)
	if err := srv.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	zoneDone := make(chan error, 1)
	go func() { zoneDone <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-zoneDone; err != nil {
			t.Errorf("zone server: %v", err)
		}
	})
	d.Server, d.ZoneAddr = srv, srv.Addr()

	pc, ln := listenUDPAndTCP(t)
	d.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: d}
	tcp := &dns.Server{Listener: ln, Handler: d}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ActivateAndServe(); err != nil {
				t.Errorf("dns server: %v", err)
			}
		}()
		<-started
	}
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		wg.Wait()
	})
	return d
}

// listenUDPAndTCP opens a UDP and a TCP socket on the same loopback port;
// the UDP port the kernel picks may be taken for TCP, so it retries.
func listenUDPAndTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// AddCustomerCNAMEs publishes the CNAMEs a customer adds for domain.
func (d *DNS) AddCustomerCNAMEs(domain string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	label := domainname.Label(domain)
	for _, sel := range []string{provision.Selector1, provision.Selector2, provision.Selector1Ed25519, provision.Selector2Ed25519} {
		d.cname[dns.Fqdn(domainname.CNAMEName(sel, domain))] = dns.Fqdn(domainname.LabelTXTOwner(sel, label, d.Zone))
	}
}

// ServeDNS answers as the customers' authoritative servers: the CNAME, or
// NXDOMAIN.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	name := strings.ToLower(req.Question[0].Name)
	d.mu.Lock()
	target, ok := d.cname[name]
	d.mu.Unlock()
	if ok {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target})
	} else {
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

// serverFor routes a name to the server authoritative for it.
func (d *DNS) serverFor(name string) string {
	name = strings.ToLower(dns.Fqdn(name))
	if name == dns.Fqdn(d.Zone) || strings.HasSuffix(name, "."+dns.Fqdn(d.Zone)) {
		return d.ZoneAddr
	}
	return d.Addr
}

// LookupTXT resolves a TXT record as a recursive resolver would, following
// CNAMEs from the customers' DNS into dkimd's zone. It is what go-msgauth's
// VerifyOptions.LookupTXT gets.
func (d *DNS) LookupTXT(name string) ([]string, error) {
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	for hops := 0; hops < 8; hops++ {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
		r, _, err := c.Exchange(m, d.serverFor(name))
		if err != nil {
			return nil, err
		}
		if r.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("lookup %s: %s", name, dns.RcodeToString[r.Rcode])
		}
		want := strings.ToLower(dns.Fqdn(name))
		next := ""
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.CNAME:
				if strings.EqualFold(rr.Hdr.Name, want) {
					want, next = strings.ToLower(rr.Target), rr.Target
				}
			case *dns.TXT:
				if strings.EqualFold(rr.Hdr.Name, want) {
					return []string{strings.Join(rr.Txt, "")}, nil
				}
			}
		}
		if next == "" {
			return nil, fmt.Errorf("lookup %s: no TXT", name)
		}
		name = next
	}
	return nil, fmt.Errorf("lookup %s: CNAME chain too long", name)
}
