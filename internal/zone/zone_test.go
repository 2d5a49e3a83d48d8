package zone

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
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

// result is what a query found, as the tables below name it.
type result int

const (
	success   result = iota // NOERROR with an answer
	noData                  // the name exists without the type: NOERROR, SOA in authority
	nameError               // no such name: NXDOMAIN, SOA in authority
	notAuth                 // outside the zone: REFUSED
)

// ask asks s for (name, qtype) on the path every query takes (respond,
// as over TCP so that nothing is truncated) and unpacks the answer.
func ask(t *testing.T, s *Snapshot, name string, qtype uint16) (ans, ns, extra []dns.RR, res result) {
	t.Helper()
	q, err := new(dns.Msg).SetQuestion(name, qtype).Pack()
	if err != nil {
		t.Fatal(err)
	}
	out, disp, _ := s.respond(make([]byte, maxTCPSize), q, true)
	if disp != Answered {
		t.Fatalf("%s %s: disposition %d", name, dns.TypeToString[qtype], disp)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		res = success
	case m.Rcode == dns.RcodeSuccess:
		res = noData
	case m.Rcode == dns.RcodeNameError:
		res = nameError
	case m.Rcode == dns.RcodeRefused:
		res = notAuth
	default:
		t.Fatalf("%s %s: rcode %s", name, dns.TypeToString[qtype], dns.RcodeToString[m.Rcode])
	}
	return m.Answer, m.Ns, m.Extra, res
}

// owner names an owner whose records changed.
func owner(kind, name string) keystore.ZoneChange {
	return keystore.ZoneChange{Kind: keystore.OwnerKind(kind), Owner: name}
}

const negSOA = "oxcloud.zone. 300 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"

func TestAnswers(t *testing.T) {
	s := testSnapshot(t)
	txt1 := `selector1-example-com._domainkey.oxcloud.zone. 3600 IN TXT "` + longValue[:255] + `" "` + longValue[255:] + `"`
	cases := []struct {
		name, qname string
		qtype       uint16
		res         result
		ans, ns, ex []string
	}{
		{"apex SOA", "oxcloud.zone.", dns.TypeSOA, success,
			[]string{"oxcloud.zone. 3600 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"}, nil, nil},
		{"apex NS with glue", "oxcloud.zone.", dns.TypeNS, success,
			[]string{"oxcloud.zone. 3600 IN NS ns1.oxcloud.zone.", "oxcloud.zone. 3600 IN NS ns.example.net."}, nil,
			[]string{"ns1.oxcloud.zone. 3600 IN A 192.0.2.1", "ns1.oxcloud.zone. 3600 IN AAAA 2001:db8::1"}},
		{"apex ANY is the SOA alone", "oxcloud.zone.", dns.TypeANY, success,
			[]string{"oxcloud.zone. 3600 IN SOA ns1.oxcloud.zone. hostmaster.oxcloud.zone. 42 14400 3600 1209600 300"}, nil, nil},
		{"apex TXT is NODATA", "oxcloud.zone.", dns.TypeTXT, noData, nil, []string{negSOA}, nil},
		{"selector TXT split in strings", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, success, []string{txt1}, nil, nil},
		{"upper case name", "SELECTOR1-Example-COM._DomainKey.OXCLOUD.zone.", dns.TypeTXT, success, []string{txt1}, nil, nil},
		{"revoked key", "selector2-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, success,
			[]string{`selector2-example-com._domainkey.oxcloud.zone. 3600 IN TXT "v=DKIM1; k=rsa; p="`}, nil, nil},
		{"ANY at a selector", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeANY, success, []string{txt1}, nil, nil},
		{"A at a selector is NODATA", "selector1-example-com._domainkey.oxcloud.zone.", dns.TypeA, noData, nil, []string{negSOA}, nil},
		{"brand fallback key", "selector1._domainkey.acme.oxcloud.zone.", dns.TypeTXT, success,
			[]string{`selector1._domainkey.acme.oxcloud.zone. 3600 IN TXT "v=DKIM1; k=ed25519; p=AAAA"`}, nil, nil},
		{"ENT _domainkey", "_domainkey.oxcloud.zone.", dns.TypeTXT, noData, nil, []string{negSOA}, nil},
		{"ENT brand", "acme.oxcloud.zone.", dns.TypeTXT, noData, nil, []string{negSOA}, nil},
		{"ENT brand _domainkey", "_domainkey.acme.oxcloud.zone.", dns.TypeANY, noData, nil, []string{negSOA}, nil},
		{"glue A", "ns1.oxcloud.zone.", dns.TypeA, success, []string{"ns1.oxcloud.zone. 3600 IN A 192.0.2.1"}, nil, nil},
		{"glue AAAA", "ns1.oxcloud.zone.", dns.TypeAAAA, success, []string{"ns1.oxcloud.zone. 3600 IN AAAA 2001:db8::1"}, nil, nil},
		{"glue TXT is NODATA", "ns1.oxcloud.zone.", dns.TypeTXT, noData, nil, []string{negSOA}, nil},
		{"missing selector", "selector3-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, nameError, nil, []string{negSOA}, nil},
		{"below a TXT name", "x.selector1-example-com._domainkey.oxcloud.zone.", dns.TypeTXT, nameError, nil, []string{negSOA}, nil},
		{"missing brand", "other.oxcloud.zone.", dns.TypeA, nameError, nil, []string{negSOA}, nil},
		{"outside the zone", "example.com.", dns.TypeTXT, notAuth, nil, nil, nil},
		{"suffix but not a label boundary", "xoxcloud.zone.", dns.TypeSOA, notAuth, nil, nil, nil},
		{"parent of the zone", "zone.", dns.TypeSOA, notAuth, nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ans, ns, ex, res := ask(t, s, c.qname, c.qtype)
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
	acme := owner("brand", "acme")
	if err := b.replace(acme, []Record{{Name: "selector1._domainkey.acme.oxcloud.zone", Value: "v=DKIM1; k=rsa; p=AA"}}); err != nil {
		t.Fatal(err)
	}
	s1 := b.finish()
	if _, _, _, res := ask(t, s1, "acme.oxcloud.zone.", dns.TypeTXT); res != noData {
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
		if _, _, _, res := ask(t, s2, name, dns.TypeTXT); res != nameError {
			t.Errorf("%s after removal: %d, want NXDOMAIN", name, res)
		}
		// The old snapshot is untouched.
		if _, _, _, res := ask(t, s1, name, dns.TypeTXT); res == nameError {
			t.Errorf("%s vanished from the old snapshot", name)
		}
	}
	if _, _, _, res := ask(t, s2, "_domainkey.oxcloud.zone.", dns.TypeTXT); res != noData {
		t.Errorf("_domainkey ENT must stay: %d", res)
	}
	if s2.Records() != 0 || s1.Records() != 1 {
		t.Errorf("records %d / %d", s1.Records(), s2.Records())
	}
	if ans, _, _, _ := ask(t, s2, "oxcloud.zone.", dns.TypeSOA); ans[0].(*dns.SOA).Serial != 2 {
		t.Errorf("serial %v", ans[0])
	}
}

// TestIncrementalModel drives the builder through random changes of many
// owners, with compaction made frequent, and checks every snapshot against
// a plain map of what the zone should hold. Each snapshot must also stay as
// it was while later ones are built on the same arena.
func TestIncrementalModel(t *testing.T) {
	b, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	b.compactAt = 256 << 10
	rng := rand.New(rand.NewPCG(1, 2))
	const owners = 1000
	value := func(owner, serial int, sel string) string {
		return fmt.Sprintf("v=DKIM1; k=rsa; p=%s%d%s", strings.Repeat("Q", rng.IntN(400)), serial, sel)
	}
	type snapshotWant struct {
		s    *Snapshot
		want map[string]string
	}
	want := map[string]string{}
	var history []snapshotWant
	compactions := 0
	for serial := uint32(1); serial <= 30; serial++ {
		arenaBefore := b.arena
		if err := b.begin(serial, serial == 1); err != nil {
			t.Fatal(err)
		}
		if serial > 1 && b.arena != arenaBefore {
			compactions++
		}
		changes := 1 + rng.IntN(200)
		if serial == 1 {
			changes = owners
		}
		type change struct {
			owner keystore.ZoneChange
			recs  []Record
		}
		var batch []change
		// A batch names each owner once, as the change journal does.
		for _, i := range rng.Perm(owners)[:changes] {
			var o keystore.ZoneChange
			var names []string
			if i%10 == 0 {
				o = owner("brand", fmt.Sprintf("brand%d", i))
			} else {
				o = owner("domain", fmt.Sprintf("d%d.example.com", i))
			}
			names = ownerNames(o, testParams.Zone)
			for _, n := range names {
				delete(want, n)
			}
			var recs []Record
			switch k := rng.IntN(4); {
			case k == 0: // deleted
			case k == 1 && o.Kind == keystore.OwnerDomain: // with Ed25519
				for _, n := range names {
					recs = append(recs, Record{Name: strings.TrimSuffix(n, "."), Value: value(i, int(serial), n)})
				}
			default:
				for _, n := range names[:2] {
					recs = append(recs, Record{Name: strings.TrimSuffix(n, "."), Value: value(i, int(serial), n)})
				}
			}
			for _, r := range recs {
				want[fqdn(r.Name)] = r.Value
			}
			batch = append(batch, change{o, recs})
		}
		for _, c := range batch {
			if err := b.removeOwner(c.owner); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range batch {
			if err := b.publish(c.recs); err != nil {
				t.Fatal(err)
			}
		}
		s := b.finish()
		history = append(history, snapshotWant{s, maps.Clone(want)})
		for _, h := range []snapshotWant{history[len(history)-1], history[rng.IntN(len(history))]} {
			checkModel(t, h.s, h.want)
		}
	}
	if compactions == 0 {
		t.Error("no incremental build compacted the arena")
	}
	for _, h := range history[:len(history)/2] {
		checkModel(t, h.s, h.want)
	}
}

// checkModel compares a snapshot with the records it should hold: each one
// answers its value, and a full walk finds those and nothing else.
func checkModel(t *testing.T, s *Snapshot, want map[string]string) {
	t.Helper()
	if s.Records() != len(want) {
		t.Fatalf("serial %d: %d records, want %d", s.Serial(), s.Records(), len(want))
	}
	for name, v := range want {
		ans, _, _, res := ask(t, s, name, dns.TypeTXT)
		if res != success || len(ans) != 1 || strings.Join(ans[0].(*dns.TXT).Txt, "") != v {
			t.Fatalf("serial %d: %s = %v (%d), want %q", s.Serial(), name, ans, res, v)
		}
	}
	seen := 0
	for _, rr := range transferRRs(t, s) {
		if txt, ok := rr.(*dns.TXT); ok {
			seen++
			if want[txt.Hdr.Name] != strings.Join(txt.Txt, "") {
				t.Errorf("serial %d: transfer has %s, not in the model", s.Serial(), txt.Hdr.Name)
			}
		}
	}
	if seen != len(want) {
		t.Fatalf("serial %d: walk found %d TXT records, want %d", s.Serial(), seen, len(want))
	}
	// Names that were never published, and ENTs of brands that are gone.
	if _, _, _, res := ask(t, s, "selector1-nope-example-com._domainkey.oxcloud.zone.", dns.TypeTXT); res != nameError {
		t.Fatalf("serial %d: missing name gave %d", s.Serial(), res)
	}
}

// The selectors the builder derives names from are the ones provisioning
// creates.
func TestSelectorsMatchProvisioning(t *testing.T) {
	if !slices.Equal(domainname.AllSelectors, []string{provision.Selector1, provision.Selector2, provision.Selector1Ed25519, provision.Selector2Ed25519}) {
		t.Fatalf("zone domainname.AllSelectors %v differ from provisioning's", domainname.AllSelectors)
	}
}

// A small zone that changes all the time keeps a small arena: every build
// leaves garbage (at least the apex with its new serial), and compaction
// must reclaim it.
func TestArenaStaysBoundedUnderChurn(t *testing.T) {
	b, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	acme := owner("brand", "acme")
	for serial := uint32(1); serial <= 10000; serial++ {
		if err := b.begin(serial, serial == 1); err != nil {
			t.Fatal(err)
		}
		v := fmt.Sprintf("v=DKIM1; k=rsa; p=%0400d", serial)
		if err := b.replace(acme, []Record{{Name: "selector1._domainkey.acme.oxcloud.zone", Value: v}}); err != nil {
			t.Fatal(err)
		}
		b.finish()
	}
	if size := b.arena.size; size > 8<<20 { // 11.5 MB without compaction
		t.Fatalf("arena of %d bytes for a zone of one record", size)
	}
	ans, _, _, res := ask(t, b.cur, "selector1._domainkey.acme.oxcloud.zone.", dns.TypeTXT)
	if res != success || !strings.HasSuffix(strings.Join(ans[0].(*dns.TXT).Txt, ""), "10000") {
		t.Fatalf("after the churn: %v %d", ans, res)
	}
}
