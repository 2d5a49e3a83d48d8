package zone

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var testParams = Params{
	Zone:    "oxcloud.zone",
	NS:      []string{"ns1.oxcloud.zone", "ns.example.net"},
	NSAddrs: map[string][]netip.Addr{"ns1.oxcloud.zone": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}},
	SOAMbox: "hostmaster.oxcloud.zone",
	Refresh: 4 * time.Hour, Retry: time.Hour, Expire: 14 * 24 * time.Hour, Minimum: 300 * time.Second,
	TTL: time.Hour,
}

// A value longer than one character-string, as an RSA-2048 key's is.
var longValue = "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 380)

func testSnapshot(t *testing.T) *Snapshot {
	t.Helper()
	s, err := Build(testParams, 42, []Record{
		{Name: "selector1-example-com._domainkey.oxcloud.zone", Value: longValue},
		{Name: "selector2-example-com._domainkey.oxcloud.zone", Value: "v=DKIM1; k=rsa; p="},
		{Name: "selector1._domainkey.acme.oxcloud.zone", Value: "v=DKIM1; k=ed25519; p=AAAA"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const negSOA = "oxcloud.zone. 300 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"

func TestLookup(t *testing.T) {
	s := testSnapshot(t)
	txt1 := `selector1-example-com._domainkey.oxcloud.zone. 3600 IN TXT "` + longValue[:255] + `" "` + longValue[255:] + `"`
	cases := []struct {
		name, qname string
		qtype       uint16
		res         Result
		ans, ns, ex []string
	}{
		{"apex SOA", "oxcloud.zone.", dns.TypeSOA, Success,
			[]string{"oxcloud.zone. 3600 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"}, nil, nil},
		{"apex NS with glue", "oxcloud.zone.", dns.TypeNS, Success,
			[]string{"oxcloud.zone. 3600 IN NS ns1.oxcloud.zone.", "oxcloud.zone. 3600 IN NS ns.example.net."}, nil,
			[]string{"ns1.oxcloud.zone. 3600 IN A 192.0.2.1", "ns1.oxcloud.zone. 3600 IN AAAA 2001:db8::1"}},
		{"apex ANY is the SOA alone", "oxcloud.zone.", dns.TypeANY, Success,
			[]string{"oxcloud.zone. 3600 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"}, nil, nil},
		{"apex TXT is NODATA", "oxcloud.zone.", dns.TypeTXT, NoData, nil, []string{negSOA}, nil},
		{"selector TXT split in strings", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, Success, []string{txt1}, nil, nil},
		{"upper case name", "SELECTOR1-Example-COM._DomainKey.OXCLOUD.zone.", dns.TypeTXT, Success, []string{txt1}, nil, nil},
		{"revoked key", "selector2-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, Success,
			[]string{`selector2-example-com._domainkey.oxcloud.zone. 3600 IN TXT "v=DKIM1; k=rsa; p="`}, nil, nil},
		{"ANY at a selector", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeANY, Success, []string{txt1}, nil, nil},
		{"A at a selector is NODATA", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeA, NoData, nil, []string{negSOA}, nil},
		{"brand fallback key", "selector1._domainkey.acme.oxcloud.zone.", dns.TypeTXT, Success,
			[]string{`selector1._domainkey.acme.oxcloud.zone. 3600 IN TXT "v=DKIM1; k=ed25519; p=AAAA"`}, nil, nil},
		{"ENT _domainkey", "_domainkey.oxcloud.zone.", dns.TypeTXT, NoData, nil, []string{negSOA}, nil},
		{"ENT brand", "acme.oxcloud.zone.", dns.TypeTXT, NoData, nil, []string{negSOA}, nil},
		{"ENT brand _domainkey", "_domainkey.acme.oxcloud.zone.", dns.TypeANY, NoData, nil, []string{negSOA}, nil},
		{"glue A", "ns1.oxcloud.zone.", dns.TypeA, Success, []string{"ns1.oxcloud.zone. 3600 IN A 192.0.2.1"}, nil, nil},
		{"glue AAAA", "ns1.oxcloud.zone.", dns.TypeAAAA, Success, []string{"ns1.oxcloud.zone. 3600 IN AAAA 2001:db8::1"}, nil, nil},
		{"glue TXT is NODATA", "ns1.oxcloud.zone.", dns.TypeTXT, NoData, nil, []string{negSOA}, nil},
		{"missing selector", "selector3-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, NameError, nil, []string{negSOA}, nil},
		{"below a TXT name", "x.selector1-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, NameError, nil, []string{negSOA}, nil},
		{"missing brand", "other.oxcloud.zone.", dns.TypeA, NameError, nil, []string{negSOA}, nil},
		{"outside the zone", "example.com.", dns.TypeTXT, NotAuth, nil, nil, nil},
		{"suffix but not a label boundary", "xoxcloud.zone.", dns.TypeSOA, NotAuth, nil, nil, nil},
		{"parent of the zone", "zone.", dns.TypeSOA, NotAuth, nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ans, ns, ex, res := s.Lookup(c.qname, c.qtype)
			if res != c.res {
				t.Fatalf("result %d, want %d", res, c.res)
			}
			sameRRs(t, "answer", ans, c.ans)
			sameRRs(t, "authority", ns, c.ns)
			sameRRs(t, "additional", ex, c.ex)
		})
	}
}

func sameRRs(t *testing.T, section string, got []dns.RR, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d records %v, want %d %v", section, len(got), got, len(want), want)
	}
	for i, w := range want {
		rr, err := dns.NewRR(w)
		if err != nil {
			t.Fatalf("bad test record %q: %v", w, err)
		}
		if !strings.EqualFold(got[i].String(), rr.String()) {
			t.Errorf("%s[%d] = %s\nwant %s", section, i, got[i], rr)
		}
	}
}

func TestIncrementalReplace(t *testing.T) {
	b, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.begin(1, true); err != nil {
		t.Fatal(err)
	}
	acme := ownerKey("brand", "acme")
	if err := b.replace(acme, []Record{{Name: "selector1._domainkey.acme.oxcloud.zone", Value: "v=DKIM1; k=rsa; p=AA"}}); err != nil {
		t.Fatal(err)
	}
	s1 := b.finish()
	if _, _, _, res := s1.Lookup("acme.oxcloud.zone.", dns.TypeTXT); res != NoData {
		t.Fatalf("brand ENT: %d", res)
	}
	if err := b.begin(2, false); err != nil {
		t.Fatal(err)
	}
	if err := b.replace(acme, nil); err != nil {
		t.Fatal(err)
	}
	s2 := b.finish()
	for _, name := range []string{"acme.oxcloud.zone.", "_domainkey.acme.oxcloud.zone.", "selector1._domainkey.acme.oxcloud.zone."} {
		if _, _, _, res := s2.Lookup(name, dns.TypeTXT); res != NameError {
			t.Errorf("%s after removal: %d, want NXDOMAIN", name, res)
		}
		// The old snapshot is untouched.
		if _, _, _, res := s1.Lookup(name, dns.TypeTXT); res == NameError {
			t.Errorf("%s vanished from the old snapshot", name)
		}
	}
	if _, _, _, res := s2.Lookup("_domainkey.oxcloud.zone.", dns.TypeTXT); res != NoData {
		t.Errorf("_domainkey ENT must stay: %d", res)
	}
	if s2.Records() != 0 || s1.Records() != 1 {
		t.Errorf("records %d / %d", s1.Records(), s2.Records())
	}
	if ans, _, _, _ := s2.Lookup("oxcloud.zone.", dns.TypeSOA); ans[0].(*dns.SOA).Serial != 2 {
		t.Errorf("serial %v", ans[0])
	}
}
