package rotation_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// cnameMode is what a customer's DNS holds for one selector.
type cnameMode int

const (
	cnameOK        cnameMode = iota // CNAME to our TXT name
	cnameMissing                    // NXDOMAIN
	cnameWrong                      // CNAME somewhere else
	cnameChained                    // CNAME to a name of the customer's, which CNAMEs to ours
	cnameDirectTXT                  // our TXT copied to the name itself, no CNAME
)

// resolverMode is how the fake resolver itself behaves.
type resolverMode int

const (
	resolverHonest  resolverMode = iota
	resolverTimeout              // drops every query
	resolverLies                 // answers a different question
)

// publicDNS is a recursive resolver on loopback that answers for the
// customers' names as their DNS says at the fake clock's time, and for
// dkimd's zone from the store, as dkimd's own DNS server would.
type publicDNS struct {
	t     testing.TB
	store *keystore.SQL
	zone  string
	now   func() time.Time
	// customer tells what the customer's DNS holds for domain's selector at t.
	customer func(domain, selector string, t time.Time) cnameMode

	mu    sync.Mutex
	mode  resolverMode
	cache map[string]string // our TXT by name, dropped at every zone change
	gen   int               // raised by every zone change, so a read that raced one is not cached
	// noCache: another process writes the store, so commits are not seen.
	noCache bool

	addr string
}

func startPublicDNS(t testing.TB, store *keystore.SQL, zone string, now func() time.Time,
	customer func(domain, selector string, t time.Time) cnameMode) *publicDNS {
	t.Helper()
	p := &publicDNS{t: t, store: store, zone: zone, now: now, customer: customer}
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
	store.Watch(context.Background(), p.forget)
	return p
}

func (p *publicDNS) setMode(m resolverMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

var selectors = []string{provision.Selector1Ed25519, provision.Selector2Ed25519, provision.Selector1, provision.Selector2}

// ourTXT is the record dkimd's zone holds at name, "" when none.
func (p *publicDNS) ourTXT(name string) string {
	p.mu.Lock()
	v, ok := p.cache[name]
	gen, noCache := p.gen, p.noCache
	p.mu.Unlock()
	if noCache {
		return p.lookupTXT(name)
	}
	if ok {
		return v
	}
	v = p.lookupTXT(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cache == nil {
		p.cache = map[string]string{}
	}
	if gen == p.gen {
		p.cache[name] = v
	}
	return v
}

func (p *publicDNS) lookupTXT(name string) string {
	first, rest, ok := strings.Cut(name, ".")
	if !ok || rest != "_domainkey."+p.zone {
		return ""
	}
	for _, sel := range selectors {
		label, ok := strings.CutPrefix(first, sel+"-")
		if !ok {
			continue
		}
		var alg string
		var pub []byte
		err := p.store.DB().QueryRowContext(context.Background(), `SELECT k.algorithm, k.public_key FROM keys k
			JOIN domains d ON k.owner_kind = 'domain' AND k.owner = d.name WHERE d.label = $1 AND k.selector = $2`,
			label, sel).Scan(&alg, &pub)
		if err != nil {
			return ""
		}
		return dkimkey.TXTValue(alg, pub)
	}
	return ""
}

// forget drops the cached records after a commit that changed the zone.
func (p *publicDNS) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cache = nil
	p.gen++
}

func (p *publicDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	p.mu.Lock()
	mode := p.mode
	p.mu.Unlock()
	if mode == resolverTimeout || len(q.Question) != 1 {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	name := strings.ToLower(strings.TrimSuffix(q.Question[0].Name, "."))
	if mode == resolverLies {
		m.Question[0].Name = "elsewhere.example."
		rr, _ := dns.NewRR("elsewhere.example. 300 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
		return
	}
	txtAt := func(owner, value string) {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
			Txt: dkimkey.SplitTXT(value)})
	}
	cname := func(owner, target string) {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300},
			Target: dns.Fqdn(target)})
	}
	// ours answers for a name in dkimd's zone, as its DNS server would.
	ours := func(owner string) {
		if txt := p.ourTXT(owner); txt != "" {
			txtAt(owner, txt)
		} else {
			m.Rcode = dns.RcodeNameError
		}
	}
	if strings.HasSuffix(name, "._domainkey."+p.zone) {
		ours(name)
		_ = w.WriteMsg(m)
		return
	}
	sel, domain, ok := strings.Cut(name, "._domainkey.")
	if !ok {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	label := strings.ReplaceAll(domain, ".", "-")
	target := sel + "-" + label + "._domainkey." + p.zone
	switch p.customer(domain, sel, p.now()) {
	case cnameMissing:
		m.Rcode = dns.RcodeNameError
	case cnameWrong:
		other := sel + "-" + label + "._domainkey.other-provider.example"
		cname(name, other)
		txtAt(other, "v=DKIM1; k=rsa; p=AAAA")
	case cnameOK:
		cname(name, target)
		ours(target)
	case cnameChained:
		mid := sel + ".dkim." + domain
		cname(name, mid)
		cname(mid, target)
		ours(target)
	case cnameDirectTXT:
		if txt := p.ourTXT(target); txt != "" {
			txtAt(name, txt)
		}
	}
	_ = w.WriteMsg(m)
}
