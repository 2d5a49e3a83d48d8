package zone

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// txtOf gives the record unrender gives, for every TXT body of a zone, and
// leaves to unrender the values it would misread.
func TestTxtOfMatchesUnrender(t *testing.T) {
	values := []string{
		"v=DKIM1; k=rsa; p=",
		"v=DKIM1; k=ed25519; p=AAAA",
		longValue,
		strings.Repeat("B", 255),
		strings.Repeat("C", 510),
		"v=DKIM1; k=rsa; p=" + strings.Repeat("M", 392),
	}
	var recs []Record
	for i, v := range values {
		recs = append(recs, Record{Name: "selector1-d" + string(rune('a'+i)) + "-example-com._domainkey.oxcloud.zone", Value: v})
	}
	s, err := Build(testParams, 7, recs)
	if err != nil {
		t.Fatal(err)
	}
	fast := 0
	s.each(func(rr dns.RR) bool {
		if _, ok := rr.(*dns.TXT); ok {
			fast++
		}
		return true
	})
	if fast != len(values) {
		t.Fatalf("each gave %d TXT records, want %d", fast, len(values))
	}
	eachEntry(s.chunks, s.shards, func(key []byte, n node) bool {
		name, _, err := dns.UnpackDomainName(key, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range n.answers() {
			want, _, _, err := unrender(name, a.qtype, a.body)
			if err != nil {
				t.Fatal(err)
			}
			got := txtOf(name, a.body)
			if a.qtype != dns.TypeTXT {
				if got != nil {
					t.Errorf("%s %s: txtOf made %v of a non-TXT body", name, dns.TypeToString[a.qtype], got)
				}
				continue
			}
			if got == nil || len(want) != 1 || got.String() != want[0].String() {
				t.Errorf("%s: txtOf %v\nunrender %v", name, got, want)
			}
			// What the transfer does with it: pack it.
			buf := make([]byte, 4096)
			end, err := dns.PackRR(got, buf, 0, nil, false)
			if err != nil {
				t.Fatalf("%s: pack: %v", name, err)
			}
			back, _, err := dns.UnpackRR(buf[:end], 0)
			if err != nil || back.String() != want[0].String() {
				t.Errorf("%s: packed and unpacked %v (%v), want %v", name, back, err, want[0])
			}
		}
		return true
	})
	for _, bad := range []string{`v=DKIM1; n="quoted"`, `back\slash`, "tab\there", "high \xff"} {
		body, err := appendTXT(nil, 3600, []byte(bad))
		if err != nil {
			t.Fatal(err)
		}
		if txtOf("x.oxcloud.zone.", body) != nil {
			t.Errorf("%q: txtOf did not leave it to unrender", bad)
		}
	}
}
