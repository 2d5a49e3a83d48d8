package console_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/console"
	"dkimd/internal/dkimkey"
	"dkimd/internal/httpapi"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/rotation"
)

const testZone = "oxcloud.zone"

// stack is the brand API with the console mounted, on a real listener, over
// a real store, with the real rotation service checking customer DNS
// through a stand-in public resolver.
type stack struct {
	t       *testing.T
	store   *keystore.SQL
	svc     *provision.Service
	srv     *httptest.Server
	dns     *publicDNS
	secrets map[string]string
}

type stackOptions struct {
	tls   bool
	now   func() time.Time
	fails int // httpapi.Options.MaxFailures
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	// Postgres, the production store: modernc's SQLite under the race
	// detector makes 200 PUTs take minutes.
	store := keystoretest.Open(t, keystore.Postgres)
	svc := provisiontest.Service(t, store, testZone, nil)
	pub := startPublicDNS(t, store)
	checker, err := rotation.NewChecker(pub.addr, testZone)
	if err != nil {
		t.Fatal(err)
	}
	checker.Timeout = 2 * time.Second
	rot, err := rotation.New(store, svc, checker, rotation.Config{}, time.Now, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	c, err := console.New(console.Options{Brands: store, Key: key, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Options{Store: store, Service: svc, Rotator: rot, Console: c,
		Log: slog.New(slog.DiscardHandler), MaxFailures: o.fails, Now: o.now})
	srv := httptest.NewUnstartedServer(api)
	if o.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return &stack{t: t, store: store, svc: svc, srv: srv, dns: pub, secrets: map[string]string{}}
}

// brand creates a brand with maildomains, as an operator would.
func (s *stack) brand(name string, maildomains ...string) {
	s.t.Helper()
	ctx := context.Background()
	secret, err := s.svc.CreateBrand(ctx, name, provision.Actor{Name: "operator"})
	if err != nil {
		s.t.Fatal(err)
	}
	s.secrets[name] = secret
	for _, d := range maildomains {
		if err := s.svc.AddMaildomain(ctx, name, d, provision.Actor{Name: "operator"}); err != nil {
			s.t.Fatal(err)
		}
	}
}

// publicDNS is a recursive resolver on loopback standing in for public DNS:
// it answers the customers' selector names with the CNAMEs their DNS holds
// (none until the test publishes them) and dkimd's zone from the store, as
// dkimd's DNS server would.
type publicDNS struct {
	store *keystore.SQL
	addr  string

	mu        sync.Mutex
	published map[string]bool // domains whose CNAMEs the customer created
}

func startPublicDNS(t *testing.T, store *keystore.SQL) *publicDNS {
	t.Helper()
	p := &publicDNS{store: store, published: map[string]bool{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: p}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	p.addr = pc.LocalAddr().String()
	return p
}

// publish makes the customer's CNAMEs of domain appear in public DNS.
func (p *publicDNS) publish(domain string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published[domain] = true
}

// selectorsLongestFirst: "selector1-ed25519-x" must not be read as
// selector1 of a label "ed25519-x".
var selectorsLongestFirst = []string{provision.Selector1Ed25519, provision.Selector2Ed25519, provision.Selector1, provision.Selector2}

// ourTXT is the TXT dkimd publishes at name, "" when none.
func (p *publicDNS) ourTXT(name string) string {
	first, rest, ok := strings.Cut(name, ".")
	if !ok || rest != "_domainkey."+testZone {
		return ""
	}
	for _, sel := range selectorsLongestFirst {
		label, ok := strings.CutPrefix(first, sel+"-")
		if !ok {
			continue
		}
		d, err := p.store.DomainByLabel(context.Background(), label)
		if err != nil {
			return ""
		}
		keys, err := p.store.Keys(context.Background(), keystore.OwnerDomain, d.Name)
		if err != nil {
			return ""
		}
		for _, k := range keys {
			if k.Selector == sel {
				return dkimkey.TXTValue(k.Algorithm, k.PublicKey)
			}
		}
	}
	return ""
}

func (p *publicDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	if len(q.Question) != 1 {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	name := strings.ToLower(strings.TrimSuffix(q.Question[0].Name, "."))
	txtAt := func(owner string) {
		txt := p.ourTXT(owner)
		if txt == "" {
			m.Rcode = dns.RcodeNameError
			return
		}
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
			Txt: dkimkey.SplitTXT(txt)})
	}
	sel, domain, ok := strings.Cut(name, "._domainkey.")
	p.mu.Lock()
	published := p.published[domain]
	p.mu.Unlock()
	switch {
	case strings.HasSuffix(name, "._domainkey."+testZone):
		txtAt(name)
	case ok && published:
		target := sel + "-" + strings.ReplaceAll(domain, ".", "-") + "._domainkey." + testZone
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300},
			Target: dns.Fqdn(target)})
		txtAt(target)
	default:
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}
