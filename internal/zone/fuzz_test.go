package zone

import (
	"context"
	"encoding/base64"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
)

// recorder is the ResponseWriter of a TCP connection, minus the socket.
type recorder struct {
	msgs [][]byte
}

func (r *recorder) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300} }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	r.msgs = append(r.msgs, b)
	return nil
}
func (r *recorder) Write(b []byte) (int, error) {
	r.msgs = append(r.msgs, append([]byte(nil), b...))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return dns.ErrSig } // unsigned by default: the fuzzer cannot forge a MAC
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// FuzzServeDNS feeds arbitrary octets to every entry point a packet reaches:
// the UDP and TCP wire path, the full-message path and ServeDNS. None may
// panic, and whatever they send must be a well-formed DNS response to the
// same ID that fits its transport.
func FuzzServeDNS(f *testing.F) {
	store := keystoretest.Open(f, keystore.SQLite)
	svc := provisiontest.Service(f, store, "oxcloud.zone", nil)
	if _, err := svc.CreateBrand(context.Background(), "acme", provision.Actor{Name: "fuzz"}); err != nil {
		f.Fatal(err)
	}
	key := TSIGKey{Name: "xfr.oxcloud.zone.", Algorithm: dns.HmacSHA256, Secret: base64.StdEncoding.EncodeToString(make([]byte, 32))}
	srv, err := New(Options{Params: testParams, TSIG: &key, XFRAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, store)
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Sync(context.Background()); err != nil {
		f.Fatal(err)
	}
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("selector1._domainkey.acme.oxcloud.zone.", dns.TypeTXT),
		new(dns.Msg).SetQuestion("Selector1._DomainKey.acme.oxcloud.zone.", dns.TypeANY).SetEdns0(4096, true),
		new(dns.Msg).SetQuestion("oxcloud.zone.", dns.TypeAXFR),
		new(dns.Msg).SetQuestion("oxcloud.zone.", dns.TypeIXFR),
		new(dns.Msg).SetNotify("oxcloud.zone."),
		new(dns.Msg).SetUpdate("oxcloud.zone."),
		new(dns.Msg).SetQuestion("nope.oxcloud.zone.", dns.TypeA).SetEdns0(512, false),
		func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("oxcloud.zone.", dns.TypeSOA)
			m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
			return m
		}(),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1})
	dirty, _ := new(dns.Msg).SetQuestion("Selector2._domainkey.ACME.oxcloud.zone.", dns.TypeTXT).SetEdns0(1232, true).Pack()
	f.Fuzz(func(t *testing.T, b []byte) {
		snap := srv.Snapshot()
		out := make([]byte, maxTCPSize)
		out2 := make([]byte, maxTCPSize)
		for _, tcp := range []bool{false, true} {
			resp, disp, st := snap.respond(out, b, tcp)
			// The UDP loop's path: questions prepared and warmed for the
			// whole batch, into query scratch that held another query.
			qs := make([]query, 2)
			qs[0].prepare(dirty)
			_, _, _ = snap.respondTo(out2, dirty, tcp, &qs[0])
			qs[0].prepare(b)
			qs[1].prepare(b)
			warm(snap.chunks, snap.shards, qs)
			resp2, disp2, st2 := snap.respondTo(out2, b, tcp, &qs[0])
			if disp2 != disp || st2 != st || string(resp2) != string(resp) {
				t.Fatalf("prepared query answered %v %+v % x, respond %v %+v % x", disp2, st2, resp2, disp, st, resp)
			}
			switch disp {
			case Answered:
				checkResponse(t, b, resp, tcp)
			case Special:
				if !tcp {
					if resp, _ := srv.specialUDP(b, netip.MustParseAddr("127.0.0.1")); resp != nil {
						checkResponse(t, b, resp, false)
					}
				}
			}
		}
		req := new(dns.Msg)
		if req.Unpack(b) == nil && !req.Response {
			w := &recorder{}
			srv.ServeDNS(w, req)
			for _, m := range w.msgs {
				checkResponse(t, b, m, true)
			}
		}
	})
}

func checkResponse(t *testing.T, q, resp []byte, tcp bool) {
	t.Helper()
	if len(resp) < 12 || resp[0] != q[0] || resp[1] != q[1] || resp[2]&0x80 == 0 {
		t.Fatalf("response % x to % x: not a response with the query's ID", resp, q)
	}
	if !tcp && len(resp) > maxUDPSize {
		t.Fatalf("UDP response of %d octets", len(resp))
	}
	if err := new(dns.Msg).Unpack(resp); err != nil {
		t.Fatalf("response does not parse: %v\n% x", err, resp)
	}
}
