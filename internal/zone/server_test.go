package zone_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/zone"
)

const testZone = "oxcloud.zone"

var testKey = zone.TSIGKey{Name: "xfr.oxcloud.zone.", Algorithm: dns.HmacSHA256,
	Secret: base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))}

func params() zone.Params {
	return zone.Params{
		Zone: testZone, NS: []string{"ns1." + testZone}, SOAMbox: "hostmaster." + testZone,
		NSAddrs: map[string][]netip.Addr{"ns1." + testZone: {netip.MustParseAddr("127.0.0.1")}},
		Refresh: 4 * time.Hour, Retry: time.Hour, Expire: 14 * 24 * time.Hour, Minimum: 300 * time.Second, TTL: time.Hour,
	}
}

// startServer runs a zone server on 127.0.0.1:0 until the test ends.
func startServer(t *testing.T, src zone.Source, opts zone.Options) *zone.Server {
	t.Helper()
	opts.Params = params()
	opts.Addr = "127.0.0.1:0"
	if opts.UDPSockets == 0 {
		opts.UDPSockets = 2
	}
	srv, err := zone.New(opts, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Serve loads the zone before answering; wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Snapshot() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return srv
}

type fixture struct {
	store *keystore.SQL
	svc   *provision.Service
	srv   *zone.Server
	reg   *prometheus.Registry
	addr  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, testZone, nil)
	actor := provision.Actor{Name: "test"}
	if _, err := svc.CreateBrand(ctx, "acme", actor); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.com", "big.example", "later.example"} {
		if err := svc.AddMaildomain(ctx, "acme", d, actor); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := svc.CreateDomain(ctx, "acme", "example.com", provision.DomainOptions{}, actor); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := svc.CreateDomain(ctx, "acme", "big.example", provision.DomainOptions{KeyBits: 4096}, actor); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv := startServer(t, store, zone.Options{
		TSIG: &testKey, XFRAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Registry: reg,
	})
	store.Watch(context.Background(), srv.Kick)
	return &fixture{store: store, svc: svc, srv: srv, reg: reg, addr: srv.Addr()}
}

func (f *fixture) txtValue(t *testing.T, kind keystore.OwnerKind, owner, selector string) string {
	t.Helper()
	keys, err := f.store.Keys(context.Background(), kind, owner)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Selector == selector {
			return dkimkey.TXTValue(k.Algorithm, k.PublicKey)
		}
	}
	t.Fatalf("no key %s/%s", owner, selector)
	return ""
}

func exchange(t *testing.T, net_, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net_, Timeout: 2 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange: %v", net_, err)
	}
	return r
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	return m
}

func joined(rr dns.RR) string {
	if txt, ok := rr.(*dns.TXT); ok {
		return strings.Join(txt.Txt, "")
	}
	return ""
}

func TestServerMatrix(t *testing.T) {
	f := newFixture(t)
	sel1 := "selector1-example-com._domainkey." + testZone + "."
	want1 := f.txtValue(t, keystore.OwnerDomain, "example.com", "selector1")
	big := "selector1-big-example._domainkey." + testZone + "."

	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			cases := []struct {
				name   string
				msg    func() *dns.Msg
				rcode  int
				aa     bool
				check  func(t *testing.T, r *dns.Msg)
				udpOK  bool // only meaningful on one transport
				tcpOnl bool
			}{
				{name: "TXT equals the API's txtValue", msg: func() *dns.Msg { return query(sel1, dns.TypeTXT) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if len(r.Answer) != 1 || joined(r.Answer[0]) != want1 {
							t.Fatalf("answer %v, want %q", r.Answer, want1)
						}
						if len(r.Answer[0].(*dns.TXT).Txt) < 2 {
							t.Errorf("an RSA-2048 value must be split into strings: %v", r.Answer[0])
						}
					}},
				{name: "question echoed as asked", msg: func() *dns.Msg { return query(strings.ToUpper(sel1[:10])+sel1[10:], dns.TypeTXT) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if r.Question[0].Name != strings.ToUpper(sel1[:10])+sel1[10:] || joined(r.Answer[0]) != want1 {
							t.Fatalf("question %v answer %v", r.Question, r.Answer)
						}
					}},
				{name: "brand fallback key", msg: func() *dns.Msg { return query("selector2._domainkey.acme."+testZone+".", dns.TypeTXT) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if want := f.txtValue(t, keystore.OwnerBrand, "acme", "selector2"); len(r.Answer) != 1 || joined(r.Answer[0]) != want {
							t.Fatalf("answer %v", r.Answer)
						}
					}},
				{name: "NXDOMAIN with SOA", msg: func() *dns.Msg { return query("selector1-nope._domainkey."+testZone+".", dns.TypeTXT) }, rcode: dns.RcodeNameError, aa: true,
					check: negative},
				{name: "NODATA at an empty non-terminal", msg: func() *dns.Msg { return query("_domainkey."+testZone+".", dns.TypeTXT) }, rcode: dns.RcodeSuccess, aa: true,
					check: negative},
				{name: "NODATA for another type", msg: func() *dns.Msg { return query(sel1, dns.TypeAAAA) }, rcode: dns.RcodeSuccess, aa: true, check: negative},
				{name: "SOA", msg: func() *dns.Msg { return query(testZone+".", dns.TypeSOA) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						serial, _ := f.store.Serial(context.Background())
						if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != serial {
							t.Fatalf("SOA %v, store serial %d", r.Answer, serial)
						}
					}},
				{name: "NS with glue", msg: func() *dns.Msg { return query(testZone+".", dns.TypeNS) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if len(r.Answer) != 1 || len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "127.0.0.1" {
							t.Fatalf("NS %v glue %v", r.Answer, r.Extra)
						}
					}},
				{name: "ANY is one RRset", msg: func() *dns.Msg { return query(sel1, dns.TypeANY) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if len(r.Answer) != 1 || joined(r.Answer[0]) != want1 {
							t.Fatalf("ANY %v", r.Answer)
						}
					}},
				{name: "outside the zone is REFUSED", msg: func() *dns.Msg { return query("example.com.", dns.TypeTXT) }, rcode: dns.RcodeRefused},
				{name: "class CH is REFUSED", msg: func() *dns.Msg {
					m := query(sel1, dns.TypeTXT)
					m.Question[0].Qclass = dns.ClassCHAOS
					return m
				}, rcode: dns.RcodeRefused},
				{name: "UPDATE is REFUSED", msg: func() *dns.Msg {
					m := new(dns.Msg)
					m.SetUpdate(testZone + ".")
					m.Insert([]dns.RR{mustRR(t, "x."+testZone+". 60 IN A 192.0.2.9")})
					return m
				}, rcode: dns.RcodeRefused},
				{name: "opcode STATUS is NOTIMP", msg: func() *dns.Msg {
					m := query(sel1, dns.TypeTXT)
					m.Opcode = dns.OpcodeStatus
					return m
				}, rcode: dns.RcodeNotImplemented},
				{name: "NOTIFY from a stranger is REFUSED", msg: func() *dns.Msg {
					m := new(dns.Msg)
					m.SetNotify(testZone + ".")
					return m
				}, rcode: dns.RcodeRefused},
				{name: "EDNS echoed", msg: func() *dns.Msg { return query(sel1, dns.TypeTXT).SetEdns0(1232, true) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						opt := r.IsEdns0()
						if opt == nil || opt.Version() != 0 || !opt.Do() {
							t.Fatalf("OPT %v", opt)
						}
					}},
				{name: "EDNS version 1 is BADVERS", msg: func() *dns.Msg {
					m := query(sel1, dns.TypeTXT).SetEdns0(1232, false)
					m.IsEdns0().SetVersion(1)
					return m
				}, rcode: dns.RcodeBadVers},
				{name: "4096-bit key with a 512-octet client", msg: func() *dns.Msg { return query(big, dns.TypeTXT) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						want := f.txtValue(t, keystore.OwnerDomain, "big.example", "selector1")
						if transport == "udp" {
							if !r.Truncated || len(r.Answer) != 0 {
								t.Fatalf("UDP without EDNS: TC %v answer %v", r.Truncated, r.Answer)
							}
							return
						}
						if r.Truncated || len(r.Answer) != 1 || joined(r.Answer[0]) != want {
							t.Fatalf("TCP: TC %v answer %v", r.Truncated, r.Answer)
						}
					}},
				{name: "4096-bit key with EDNS 1232", msg: func() *dns.Msg { return query(big, dns.TypeTXT).SetEdns0(1232, false) }, rcode: dns.RcodeSuccess, aa: true,
					check: func(t *testing.T, r *dns.Msg) {
						if r.Truncated || len(r.Answer) != 1 || joined(r.Answer[0]) != f.txtValue(t, keystore.OwnerDomain, "big.example", "selector1") {
							t.Fatalf("TC %v answer %v", r.Truncated, r.Answer)
						}
					}},
				{name: "AXFR without TSIG is REFUSED", msg: func() *dns.Msg { return query(testZone+".", dns.TypeAXFR) }, rcode: dns.RcodeRefused},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					m := c.msg()
					r := exchange(t, transport, f.addr, m)
					if r.Id != m.Id || !r.Response {
						t.Fatalf("id %d/%d response %v", r.Id, m.Id, r.Response)
					}
					if r.Rcode != c.rcode {
						t.Fatalf("rcode %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode], r)
					}
					if r.Authoritative != c.aa || r.RecursionAvailable {
						t.Errorf("AA %v (want %v) RA %v", r.Authoritative, c.aa, r.RecursionAvailable)
					}
					if c.check != nil {
						c.check(t, r)
					}
				})
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		got, err := testutil.GatherAndCount(f.reg, "dkimd_dns_queries_total")
		if err != nil || got == 0 {
			t.Fatalf("queries metric: %d series, %v", got, err)
		}
		serial, _ := f.store.Serial(context.Background())
		mf, _ := f.reg.Gather()
		seen := map[string]float64{}
		for _, fam := range mf {
			for _, m := range fam.GetMetric() {
				if m.GetGauge() != nil {
					seen[fam.GetName()] = m.GetGauge().GetValue()
				}
				if fam.GetName() == "dkimd_dns_queries_total" {
					lbl := m.GetLabel()
					if lbl[0].GetValue() == "TXT" && lbl[1].GetValue() == "NXDOMAIN" {
						seen["txt_nx"] = m.GetCounter().GetValue()
					}
				}
			}
		}
		if seen["dkimd_dns_zone_serial"] != float64(serial) || seen["dkimd_dns_zone_records"] != 6 || seen["txt_nx"] != 2 {
			t.Errorf("metrics %v (serial %d)", seen, serial)
		}
	})
}

func negative(t *testing.T, r *dns.Msg) {
	t.Helper()
	if len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Fatalf("answer %v authority %v", r.Answer, r.Ns)
	}
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Ttl != 300 || soa.Hdr.Name != testZone+"." {
		t.Fatalf("authority %v: want the SOA with TTL min(3600, 300)", r.Ns[0])
	}
}

func mustRR(t *testing.T, s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// Raw malformed input over UDP: answered with FORMERR or dropped, and the
// server keeps answering.
func TestServerMalformed(t *testing.T) {
	f := newFixture(t)
	conn, err := net.Dial("udp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good, _ := query("selector1-example-com._domainkey."+testZone+".", dns.TypeTXT).Pack()
	cases := []struct {
		name  string
		raw   []byte
		rcode int // -1: no answer
	}{
		{"too short", []byte{1, 2, 3}, -1},
		{"no question", []byte{0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, dns.RcodeFormatError},
		{"truncated question", good[:len(good)-3], dns.RcodeFormatError},
		{"label runs past the end", append(append([]byte{}, good[:12]...), 60, 'a'), dns.RcodeFormatError},
		{"pointer in the question", append(append([]byte{}, good[:12]...), 0xC0, 12, 0, 16, 0, 1), dns.RcodeFormatError},
		{"a response", func() []byte { b := append([]byte{}, good...); b[2] |= 0x80; return b }(), -1},
		{"two questions", func() []byte { b := append([]byte{}, good...); b[5] = 2; return b }(), dns.RcodeFormatError},
		{"OPT past the end", func() []byte { b := append([]byte{}, good...); b[11] = 1; return append(b, 0, 0, 41, 2) }(), dns.RcodeFormatError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := conn.Write(c.raw); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := conn.Read(buf)
			if c.rcode < 0 {
				if err == nil {
					t.Fatalf("got an answer of %d octets, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n < 12 || int(buf[3]&0xF) != c.rcode || buf[2]&0x80 == 0 {
				t.Fatalf("answer % x, want rcode %d", buf[:n], c.rcode)
			}
		})
	}
	if r := exchange(t, "udp", f.addr, query("selector1-example-com._domainkey."+testZone+".", dns.TypeTXT)); r.Rcode != 0 || len(r.Answer) != 1 {
		t.Fatalf("server stopped answering: %v", r)
	}
}

func TestTransfer(t *testing.T) {
	f := newFixture(t)
	tr := &dns.Transfer{TsigSecret: map[string]string{testKey.Name: testKey.Secret}}
	m := query(testZone+".", dns.TypeAXFR)
	m.SetTsig(testKey.Name, testKey.Algorithm, 300, time.Now().Unix())
	ch, err := tr.In(m, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for env := range ch {
		if env.Error != nil {
			t.Fatal(env.Error)
		}
		rrs = append(rrs, env.RR...)
	}
	txt := 0
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeTXT {
			txt++
		}
	}
	// example.com and big.example: two selectors each; acme: two.
	if len(rrs) < 2 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA || txt != 6 {
		t.Fatalf("AXFR gave %d records, %d TXT: %v", len(rrs), txt, rrs)
	}

	t.Run("wrong key", func(t *testing.T) {
		bad := zone.TSIGKey{Name: testKey.Name, Algorithm: testKey.Algorithm, Secret: base64.StdEncoding.EncodeToString([]byte("another secret of 32 octets....."))}
		tr := &dns.Transfer{TsigSecret: map[string]string{bad.Name: bad.Secret}}
		m := query(testZone+".", dns.TypeAXFR)
		m.SetTsig(bad.Name, bad.Algorithm, 300, time.Now().Unix())
		ch, err := tr.In(m, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		for env := range ch {
			if env.Error == nil && len(env.RR) > 0 {
				t.Fatalf("transfer with the wrong key gave records: %v", env.RR)
			}
		}
	})
	t.Run("address not allowed", func(t *testing.T) {
		srv := startServer(t, f.store, zone.Options{TSIG: &testKey, XFRAllow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
		m := query(testZone+".", dns.TypeAXFR)
		m.SetTsig(testKey.Name, testKey.Algorithm, 300, time.Now().Unix())
		tr := &dns.Transfer{TsigSecret: map[string]string{testKey.Name: testKey.Secret}}
		ch, err := tr.In(m, srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		for env := range ch {
			if env.Error == nil && len(env.RR) > 0 {
				t.Fatalf("transfer from a disallowed address gave records: %v", env.RR)
			}
		}
	})
	t.Run("signed SOA query over UDP", func(t *testing.T) {
		c := &dns.Client{Net: "udp", TsigSecret: map[string]string{testKey.Name: testKey.Secret}, Timeout: 2 * time.Second}
		m := query(testZone+".", dns.TypeSOA)
		m.SetTsig(testKey.Name, testKey.Algorithm, 300, time.Now().Unix())
		r, _, err := c.Exchange(m, f.addr)
		if err != nil {
			t.Fatal(err) // includes a bad response signature
		}
		if len(r.Answer) != 1 || r.IsTsig() == nil {
			t.Fatalf("signed SOA answer %v", r)
		}
	})
}

// A change through the store is answered within a second (SQLite mode:
// the commit hook kicks the update loop).
func TestLiveUpdate(t *testing.T) {
	f := newFixture(t)
	name := "selector2-later-example._domainkey." + testZone + "."
	if r := exchange(t, "udp", f.addr, query(name, dns.TypeTXT)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: %v", r)
	}
	before := f.srv.Snapshot().Serial()
	if _, _, _, err := f.svc.CreateDomain(context.Background(), "acme", "later.example", provision.DomainOptions{}, provision.Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // committed: the second for DNS starts now
	want := f.txtValue(t, keystore.OwnerDomain, "later.example", "selector2")
	waitTXT(t, f.addr, name, want, start)
	if s := f.srv.Snapshot().Serial(); s <= before {
		t.Errorf("serial %d after %d", s, before)
	}
	if err := f.svc.DeleteDomain(context.Background(), "acme", "later.example", provision.Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitTXT(t, f.addr, name, "", start)
}

// waitTXT polls until name answers want ("" for NXDOMAIN), failing 1 s after
// start, the commit of the change (docs/operator-guide.md: every replica answers a change
// within 1 second).
func waitTXT(t *testing.T, addr, name, want string, start time.Time) {
	t.Helper()
	for {
		r := exchange(t, "udp", addr, query(name, dns.TypeTXT))
		if want == "" && r.Rcode == dns.RcodeNameError {
			break
		}
		if want != "" && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && joined(r.Answer[0]) == want {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s not answered %q within 1s: %v", name, want, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%s answered after %v", name, time.Since(start))
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing and CI=true: %v", name, err)
		}
		t.Skipf("%s is missing: %v", name, err)
	}
	return p
}

// The same answers through dig, the tool operators will use.
func TestDig(t *testing.T) {
	dig := needTool(t, "dig")
	f := newFixture(t)
	host, port, _ := net.SplitHostPort(f.addr)
	run := func(args ...string) string {
		out, err := exec.Command(dig, append([]string{"@" + host, "-p", port, "+norec", "+time=2", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	sel1 := "selector1-example-com._domainkey." + testZone
	want := f.txtValue(t, keystore.OwnerDomain, "example.com", "selector1")
	for _, tcp := range []string{"+notcp", "+tcp"} {
		out := run(tcp, "+short", "TXT", strings.ToUpper(sel1))
		if got := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(out), `" "`, ""), `"`, ""); got != want {
			t.Errorf("dig %s +short TXT = %q, want %q", tcp, got, want)
		}
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"TXT", sel1}, []string{"status: NOERROR", "flags: qr aa;", "ANSWER: 1"}},
		{[]string{"TXT", "nope._domainkey." + testZone}, []string{"status: NXDOMAIN", "flags: qr aa;", "AUTHORITY: 1", "300\tIN\tSOA"}},
		{[]string{"TXT", "_domainkey." + testZone}, []string{"status: NOERROR", "ANSWER: 0", "AUTHORITY: 1"}},
		{[]string{"TXT", "example.org"}, []string{"status: REFUSED"}},
		{[]string{"CH", "TXT", "version.bind"}, []string{"status: REFUSED"}},
		{[]string{"+noedns", "+ignore", "TXT", "selector1-big-example._domainkey." + testZone}, []string{"flags: qr aa tc;"}},
		{[]string{"+bufsize=1232", "TXT", "selector1-big-example._domainkey." + testZone}, []string{"ANSWER: 1", "udp: 1232"}},
		{[]string{"ANY", sel1}, []string{"status: NOERROR", "ANSWER: 1"}},
		{[]string{"AXFR", testZone}, []string{"Transfer failed"}},
	} {
		out := run(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("dig %v: no %q in\n%s", c.args, w, out)
			}
		}
	}
}

// Two replicas on one Postgres: a write through one store handle is
// answered by the other replica's DNS within a second (LISTEN/NOTIFY), and
// the serials agree.
func TestReplicasOnPostgres(t *testing.T) {
	ctx := context.Background()
	url := keystoretest.PostgresURL(t)
	writer, reader := keystoretest.OpenPostgres(t, url), keystoretest.OpenPostgres(t, url)
	svc := provisiontest.Service(t, writer, testZone, nil)
	actor := provision.Actor{Name: "test"}
	if _, err := svc.CreateBrand(ctx, "acme", actor); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMaildomain(ctx, "acme", "example.com", actor); err != nil {
		t.Fatal(err)
	}
	// A long reconcile interval: only NOTIFY can make the deadline.
	a := startServer(t, reader, zone.Options{Reconcile: time.Hour})
	b := startServer(t, writer, zone.Options{Reconcile: time.Hour})
	reader.Watch(ctx, a.Kick)
	writer.Watch(ctx, b.Kick)
	time.Sleep(100 * time.Millisecond) // let both LISTEN connections come up

	name := "selector1-example-com._domainkey." + testZone + "."
	if _, _, _, err := svc.CreateDomain(ctx, "acme", "example.com", provision.DomainOptions{}, actor); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // committed: the second for DNS starts now
	keys, err := writer.Keys(ctx, keystore.OwnerDomain, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := dkimkey.TXTValue(keys[0].Algorithm, keys[0].PublicKey)
	waitTXT(t, a.Addr(), name, want, start)
	waitTXT(t, b.Addr(), name, want, start)
	serial, _ := writer.Serial(ctx)
	for _, s := range []*zone.Server{a, b} {
		r := exchange(t, "udp", s.Addr(), query(testZone+".", dns.TypeSOA))
		if got := r.Answer[0].(*dns.SOA).Serial; got != serial {
			t.Errorf("replica serial %d, database %d", got, serial)
		}
	}
	if err := svc.DeleteDomain(ctx, "acme", "example.com", actor); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitTXT(t, a.Addr(), name, "", start)
}

// The periodic reconcile heals a replica that missed every notification.
func TestReconcileWithoutNotify(t *testing.T) {
	ctx := context.Background()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, testZone, nil)
	srv := startServer(t, store, zone.Options{Reconcile: 200 * time.Millisecond}) // no commit hook
	if _, err := svc.CreateBrand(ctx, "acme", provision.Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // committed (the brand's secret hash is slow): the second for DNS starts now
	keys, _ := store.Keys(ctx, keystore.OwnerBrand, "acme")
	waitTXT(t, srv.Addr(), "selector1._domainkey.acme."+testZone+".", dkimkey.TXTValue(keys[0].Algorithm, keys[0].PublicKey), start)
}

// TestJournalPrunedBehindReplica: a replica whose serial lies below what the
// pruned change journal still holds cannot catch up incrementally; it must
// reload the whole zone and still end up answering every change.
func TestJournalPrunedBehindReplica(t *testing.T) {
	ctx := context.Background()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, testZone, nil)
	actor := provision.Actor{Name: "test"}
	if _, err := svc.CreateBrand(ctx, "acme", actor); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, store, zone.Options{Reconcile: time.Hour}) // no commit hook: it falls behind
	// Changes the replica misses, then pruned from the journal.
	for _, b := range []string{"beta", "gamma", "delta"} {
		if _, err := svc.CreateBrand(ctx, b, actor); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := store.PruneZoneJournal(ctx, 1); err != nil || n == 0 {
		t.Fatalf("PruneZoneJournal: %d, %v", n, err)
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"beta", "gamma", "delta"} {
		keys, err := store.Keys(ctx, keystore.OwnerBrand, b)
		if err != nil || len(keys) == 0 {
			t.Fatalf("keys of %s: %v", b, err)
		}
		r := exchange(t, "udp", srv.Addr(), query("selector1._domainkey."+b+"."+testZone+".", dns.TypeTXT))
		if len(r.Answer) != 1 || joined(r.Answer[0]) != dkimkey.TXTValue(keys[0].Algorithm, keys[0].PublicKey) {
			t.Fatalf("%s after a pruned journal: %v", b, r.Answer)
		}
	}
}
