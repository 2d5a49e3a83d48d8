package zone

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// transferMsgs is the zone as writeAXFR sends it: each length-prefixed
// message, tsig nil for unsigned ones.
func transferMsgs(t testing.TB, s *Snapshot, req *dns.Msg, tsig *tsigChain) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	a, err := newAXFRWriter(&buf, req, tsig)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.writeAXFR(a); err != nil {
		t.Fatal(err)
	}
	a.release()
	var msgs [][]byte
	for b := buf.Bytes(); len(b) > 0; {
		l := int(binary.BigEndian.Uint16(b))
		msgs = append(msgs, b[2:2+l])
		b = b[2+l:]
	}
	return msgs
}

// transferRRs is the records of an unsigned transfer of s, in order.
func transferRRs(t testing.TB, s *Snapshot) []dns.RR {
	t.Helper()
	var rrs []dns.RR
	for _, msg := range transferMsgs(t, s, new(dns.Msg).SetAxfr(fqdn(s.params.Zone)), nil) {
		m := new(dns.Msg)
		if err := m.Unpack(msg); err != nil {
			t.Fatal(err)
		}
		if len(m.Question) != 1 || !m.Response || !m.Authoritative || m.Rcode != 0 {
			t.Fatalf("transfer message %v", m)
		}
		rrs = append(rrs, m.Answer...)
	}
	return rrs
}

// The transfer copies the rendered answers: what it sends reads back as
// the records unrender makes of the same bodies, the SOA first and last,
// for values miekg/dns would have to escape too.
func TestTransferMatchesUnrender(t *testing.T) {
	values := []string{
		"v=DKIM1; k=rsa; p=",
		"v=DKIM1; k=ed25519; p=AAAA",
		longValue,
		strings.Repeat("B", 255),
		strings.Repeat("C", 510),
		"v=DKIM1; k=rsa; p=" + strings.Repeat("M", 392),
		`v=DKIM1; n="quoted"`, `back\slash`, "tab\there", "high \xff",
	}
	var recs []Record
	for i, v := range values {
		recs = append(recs, Record{Name: "selector1-d" + string(rune('a'+i)) + "-example-com._domainkey.oxcloud.zone", Value: v})
	}
	for i := range 300 { // several messages
		recs = append(recs, Record{Name: fmt.Sprintf("selector2-d%d-example-com._domainkey.oxcloud.zone", i), Value: "v=DKIM1; k=rsa; p=" + strings.Repeat("M", 392)})
	}
	s, err := Build(testParams, 7, recs)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	eachEntry(s.chunks, s.shards, func(key []byte, n node) bool {
		name, _, err := dns.UnpackDomainName(key, 0)
		if err != nil {
			t.Fatal(err)
		}
		for a := range n.all {
			if a.qtype == dns.TypeSOA {
				continue
			}
			ans, _, _, err := unrender(name, a.qtype, a.body)
			if err != nil {
				t.Fatal(err)
			}
			for _, rr := range ans {
				want = append(want, rr.String())
			}
		}
		return true
	})
	rrs := transferRRs(t, s)
	soa := s.params.soa(s.serial).String()
	if len(rrs) < 2 || rrs[0].String() != soa || rrs[len(rrs)-1].String() != soa {
		t.Fatalf("transfer does not start and end with the SOA %s", soa)
	}
	var got []string
	for _, rr := range rrs[1 : len(rrs)-1] {
		got = append(got, rr.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("transfer gave %d records, unrender %d; first transfer records %v", len(got), len(want), got[:min(3, len(got))])
	}
}

// Every message of a signed transfer verifies as miekg/dns (and a
// secondary) checks a TSIG stream: the first against the request's MAC, each
// later one against the previous message's MAC with the timers only.
func TestTransferTSIGChain(t *testing.T) {
	var recs []Record
	for i := range 300 {
		recs = append(recs, Record{Name: fmt.Sprintf("selector1-d%d-example-com._domainkey.oxcloud.zone", i), Value: "v=DKIM1; k=rsa; p=" + strings.Repeat("M", 392)})
	}
	s, err := Build(testParams, 9, recs)
	if err != nil {
		t.Fatal(err)
	}
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for _, alg := range []string{dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512} {
		t.Run(alg, func(t *testing.T) {
			key := &TSIGKey{Name: "xfr.oxcloud.zone.", Algorithm: alg, Secret: secret}
			q := new(dns.Msg).SetAxfr("oxcloud.zone.")
			q.SetTsig(key.Name, alg, 300, time.Now().Unix())
			raw, _, err := dns.TsigGenerate(q, secret, "", false)
			if err != nil {
				t.Fatal(err)
			}
			req := new(dns.Msg)
			if err := req.Unpack(raw); err != nil {
				t.Fatal(err)
			}
			chain, err := newTSIGChain(key, req.IsTsig())
			if err != nil {
				t.Fatal(err)
			}
			msgs := transferMsgs(t, s, req, chain)
			if len(msgs) < 5 {
				t.Fatalf("%d messages: the test wants a chain", len(msgs))
			}
			prev := req.IsTsig().MAC
			records := 0
			for i, msg := range msgs {
				if err := dns.TsigVerify(slices.Clone(msg), secret, prev, i > 0); err != nil { // it rewrites its input
					t.Fatalf("message %d of %d: %v", i, len(msgs), err)
				}
				m := new(dns.Msg)
				if err := m.Unpack(msg); err != nil {
					t.Fatal(err)
				}
				if m.Id != req.Id || m.IsTsig() == nil {
					t.Fatalf("message %d: id %d, TSIG %v", i, m.Id, m.IsTsig())
				}
				prev = m.IsTsig().MAC
				for _, rr := range m.Answer {
					if rr.Header().Rrtype == dns.TypeTXT {
						records++
					}
				}
			}
			if records != 300 {
				t.Fatalf("%d TXT records, want 300", records)
			}
			// A MAC changed in one message breaks the chain after it.
			bad := slices.Clone(msgs[1])
			bad[len(bad)-10] ^= 1
			m := new(dns.Msg)
			_ = m.Unpack(msgs[0])
			if dns.TsigVerify(bad, secret, m.IsTsig().MAC, true) == nil {
				t.Fatal("a corrupted message verified")
			}
		})
	}
}
