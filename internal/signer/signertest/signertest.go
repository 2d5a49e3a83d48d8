// Package signertest gives the signing tests (signer, signhttp, milter) a
// real keystore with provisioned brands and domains, a loopback DNS server
// that publishes their keys the way the internet sees them (the zone's TXT
// records and the customers' CNAMEs), and verifiers that resolve through it:
// go-msgauth and Debian's dkimpy.
package signertest

import (
	"context"
	"errors"
	"fmt"
	"net"
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
		tx.ZoneChanged(keystore.OwnerBrand, BrandEd)
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

// DNS is a loopback DNS server (UDP and TCP) that answers as the internet
// would for the fixture: TXT records of the zone rendered from the store on
// each query, and the customers' `selectorN._domainkey.<domain>` CNAMEs into
// the zone, with the CNAME target's TXT in the same answer as a recursive
// resolver returns it.
type DNS struct {
	Addr  string // host:port, UDP and TCP
	store keystore.Store
	zone  string

	mu    sync.Mutex
	cname map[string]string // fqdn -> fqdn
}

// StartDNS starts the server; it stops at test cleanup.
func StartDNS(t testing.TB, store keystore.Store, zone string) *DNS {
	t.Helper()
	d := &DNS{store: store, zone: zone, cname: make(map[string]string)}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
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

// AddCustomerCNAMEs publishes the CNAMEs a customer adds for domain.
func (d *DNS) AddCustomerCNAMEs(domain string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	label := domainname.Label(domain)
	for _, sel := range []string{provision.Selector1, provision.Selector2, provision.Selector1Ed25519, provision.Selector2Ed25519} {
		d.cname[dns.Fqdn(sel+"._domainkey."+domain)] = dns.Fqdn(sel + "-" + label + "._domainkey." + d.zone)
	}
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	for hops := 0; hops < 4; hops++ {
		d.mu.Lock()
		target, ok := d.cname[name]
		d.mu.Unlock()
		if !ok {
			break
		}
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target})
		name = target
	}
	txt, err := d.txt(context.Background(), name)
	switch {
	case err != nil:
		m.Rcode = dns.RcodeServerFailure
	case txt == nil && len(m.Answer) == 0:
		m.Rcode = dns.RcodeNameError
	case txt != nil && (q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY):
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: txt})
	}
	_ = w.WriteMsg(m)
}

// selectorsLongestFirst lets a zone owner name's first label be split into
// selector and domain label.
var selectorsLongestFirst = []string{provision.Selector1Ed25519, provision.Selector2Ed25519, provision.Selector1, provision.Selector2}

// txt renders the record at name (fqdn, lower case) from the store, nil when
// there is none.
func (d *DNS) txt(ctx context.Context, name string) ([]string, error) {
	suffix := "._domainkey." + d.zone + "."
	var kind keystore.OwnerKind
	var owner, selector string
	if first, ok := strings.CutSuffix(name, suffix); ok && !strings.Contains(first, ".") {
		for _, sel := range selectorsLongestFirst {
			if label, ok := strings.CutPrefix(first, sel+"-"); ok {
				dom, err := d.store.DomainByLabel(ctx, label)
				if errors.Is(err, keystore.ErrNotFound) {
					return nil, nil
				}
				if err != nil {
					return nil, err
				}
				kind, owner, selector = keystore.OwnerDomain, dom.Name, sel
				break
			}
		}
	} else if rest, ok := strings.CutSuffix(name, "."+d.zone+"."); ok {
		parts := strings.Split(rest, ".")
		if len(parts) == 3 && parts[1] == "_domainkey" {
			kind, owner, selector = keystore.OwnerBrand, parts[2], parts[0]
		}
	}
	if owner == "" {
		return nil, nil
	}
	keys, err := d.store.Keys(ctx, kind, owner)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Selector == selector {
			return dkimkey.SplitTXT(dkimkey.TXTValue(k.Algorithm, k.PublicKey)), nil
		}
	}
	return nil, nil
}

// LookupTXT resolves name through server the way a stub resolver behind a
// recursive one would: TXT, following CNAMEs in the answer. It is what
// go-msgauth's VerifyOptions.LookupTXT gets.
func LookupTXT(server string) func(name string) ([]string, error) {
	return func(name string) ([]string, error) {
		c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
		r, _, err := c.Exchange(m, server)
		if err != nil {
			return nil, err
		}
		if r.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("lookup %s: %s", name, dns.RcodeToString[r.Rcode])
		}
		want := strings.ToLower(dns.Fqdn(name))
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.CNAME:
				if strings.EqualFold(rr.Hdr.Name, want) {
					want = strings.ToLower(rr.Target)
				}
			case *dns.TXT:
				if strings.EqualFold(rr.Hdr.Name, want) {
					return []string{strings.Join(rr.Txt, "")}, nil
				}
			}
		}
		return nil, fmt.Errorf("lookup %s: no TXT", name)
	}
}
