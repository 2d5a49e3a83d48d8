package zone_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/zone"
)

// brandServer serves a zone of one brand (two TXT records) from a real
// SQLite store.
func brandServer(t *testing.T, opts zone.Options) (*zone.Server, *prometheus.Registry) {
	t.Helper()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, testZone, nil)
	if _, err := svc.CreateBrand(context.Background(), "acme", provision.Actor{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts.Registry = reg
	return startServer(t, store, opts), reg
}

const brandTXT = "selector1._domainkey.acme." + testZone + "."

// counter is the value of one labelled counter in reg.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}

// udpFrom is a UDP client bound to a loopback source address.
func udpFrom(t *testing.T, src, server string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)),
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort(server)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// repeat is n times name.
func repeat(name string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = name
	}
	return names
}

// flood sends a query for each name from c and sorts what comes back into
// full answers and empty truncated ones. It reads until want replies have
// come, then until none comes for a while (more replies than the limit lets
// through fail the test; a slow machine can only make them late).
func flood(t *testing.T, c *net.UDPConn, names []string, want int) (full, truncated int) {
	t.Helper()
	for i, name := range names {
		m := query(name, dns.TypeTXT)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(5 * time.Second)
	for {
		wait := deadline
		if full+truncated >= want {
			wait = time.Now().Add(200 * time.Millisecond)
		}
		c.SetReadDeadline(wait)
		k, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return full, truncated
			}
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Truncated && len(r.Answer) == 0:
			truncated++
		case r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 || r.Rcode == dns.RcodeNameError:
			full++
		default:
			t.Fatalf("unexpected reply %v", r)
		}
	}
}

// Response-rate limiting on real sockets: a flood from 127.0.1.0/24 gets
// rate full answers a second and every second answer over it truncated,
// the rest dropped, while 127.0.0.1 is answered in full; NXDOMAIN answers
// for different names count as one answer; an exempt prefix is never
// limited. The clock stands still, so that the test sits in one window
// however slow the machine.
func TestRRL(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const rate = 5
	cases := []struct {
		name                     string
		exempt                   []netip.Prefix
		wantFull, wantTC, wantDr int
	}{
		{"limited", nil, rate, 17, 18},
		{"exempt", []netip.Prefix{netip.MustParsePrefix("127.0.1.0/24")}, 40, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, reg := brandServer(t, zone.Options{RRL: rate, RRLSlip: 2, RRLExempt: c.exempt, UDPSockets: 2,
				Now: func() time.Time { return now }})
			flooder := udpFrom(t, "127.0.1.1", srv.Addr())
			full, tc := flood(t, flooder, repeat(brandTXT, 40), c.wantFull+c.wantTC)
			if full != c.wantFull || tc != c.wantTC {
				t.Fatalf("flood of 40: %d full answers, %d truncated; want %d, %d", full, tc, c.wantFull, c.wantTC)
			}
			dropped := counter(t, reg, "dkimd_dns_rrl_total", "action", "dropped")
			slipped := counter(t, reg, "dkimd_dns_rrl_total", "action", "slipped")
			if int(dropped) != c.wantDr || int(slipped) != c.wantTC {
				t.Fatalf("dkimd_dns_rrl_total dropped %v slipped %v, want %d %d", dropped, slipped, c.wantDr, c.wantTC)
			}
			// Another prefix, the same answer: all of them.
			other := udpFrom(t, "127.0.0.1", srv.Addr())
			if full, tc := flood(t, other, repeat(brandTXT, rate), rate); full != rate || tc != 0 {
				t.Fatalf("127.0.0.1 during the flood: %d full, %d truncated; want %d, 0", full, tc, rate)
			}
			// Another answer, the same prefix (127.0.1.2 is in 127.0.1.0/24).
			neighbour := udpFrom(t, "127.0.1.2", srv.Addr())
			if full, _ := flood(t, neighbour, repeat("selector2._domainkey.acme."+testZone+".", rate), rate); full != rate {
				t.Fatalf("another answer to the flooded prefix: %d full, want %d", full, rate)
			}
			// The same answer, the same prefix, another address: limited.
			if c.exempt == nil {
				if full, tc := flood(t, neighbour, repeat(brandTXT, 4), 2); full != 0 || tc != 2 {
					t.Fatalf("127.0.1.2 for the flooded answer: %d full, %d truncated; want 0, 2", full, tc)
				}
			}
		})
	}
	t.Run("nxdomain per zone", func(t *testing.T) {
		srv, reg := brandServer(t, zone.Options{RRL: rate, RRLSlip: 2, Now: func() time.Time { return now }})
		c := udpFrom(t, "127.0.1.1", srv.Addr())
		var names []string
		for i := range 10 {
			names = append(names, "selector1-nope"+string(rune('a'+i))+"._domainkey."+testZone+".")
		}
		full, tc := flood(t, c, names, rate+2)
		if full != rate || tc != 2 || counter(t, reg, "dkimd_dns_rrl_total", "action", "dropped") != 3 {
			t.Fatalf("ten NXDOMAIN names: %d full, %d truncated; want %d, 2, and 3 dropped", full, tc, rate)
		}
	})
	t.Run("off", func(t *testing.T) {
		srv, _ := brandServer(t, zone.Options{RRL: 0, Now: func() time.Time { return now }})
		if full, tc := flood(t, udpFrom(t, "127.0.1.1", srv.Addr()), repeat(brandTXT, 40), 40); full != 40 || tc != 0 {
			t.Fatalf("rate limiting off: %d full, %d truncated; want 40, 0", full, tc)
		}
	})
}

// tcpQuery writes one length-prefixed query on c.
func tcpQuery(t *testing.T, c net.Conn, id uint16, name string) {
	t.Helper()
	m := query(name, dns.TypeTXT)
	m.Id = id
	b, _ := m.Pack()
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		t.Fatal(err)
	}
}

// tcpRead reads one length-prefixed message from r.
func tcpRead(r io.Reader) (*dns.Msg, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(b)
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer waits (up to 5 s) for the server to close c.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// Several queries written at once on one connection are all answered, in
// turn.
func TestTCPPipelined(t *testing.T) {
	srv, _ := brandServer(t, zone.Options{})
	c := dialTCP(t, srv.Addr())
	names := []string{brandTXT, "selector2._domainkey.acme." + testZone + ".", "nope._domainkey." + testZone + ".", brandTXT}
	for i, n := range names {
		tcpQuery(t, c, uint16(100+i), n)
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, n := range names {
		m, err := tcpRead(r)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if m.Id != uint16(100+i) || m.Question[0].Name != n {
			t.Fatalf("answer %d is to %d %s, want %d %s", i, m.Id, m.Question[0].Name, 100+i, n)
		}
		if wantOK := i != 2; wantOK != (len(m.Answer) == 1) {
			t.Fatalf("answer %d: %v", i, m)
		}
	}
}

// At most TCPMax connections are served at once: the next is closed at
// once and counted, and a place freed is taken again. An idle connection
// is closed after TCPIdle.
func TestTCPLimits(t *testing.T) {
	t.Run("cap", func(t *testing.T) {
		srv, reg := brandServer(t, zone.Options{TCPMax: 2})
		a, b := dialTCP(t, srv.Addr()), dialTCP(t, srv.Addr())
		for i, c := range []net.Conn{a, b} {
			tcpQuery(t, c, uint16(i), brandTXT)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if m, err := tcpRead(c); err != nil || len(m.Answer) != 1 {
				t.Fatalf("connection %d: %v %v", i+1, m, err)
			}
		}
		third := dialTCP(t, srv.Addr())
		if !closedByServer(t, third) {
			t.Fatal("a third connection over a cap of 2 stayed open")
		}
		if got := counter(t, reg, "dkimd_dns_tcp_rejected_total", "", ""); got != 1 {
			t.Fatalf("dkimd_dns_tcp_rejected_total = %v, want 1", got)
		}
		a.Close()
		// The server learns of the close when its read ends; until then a
		// new connection may still be turned away.
		for deadline := time.Now().Add(5 * time.Second); ; {
			c := dialTCP(t, srv.Addr())
			tcpQuery(t, c, 9, brandTXT)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if m, err := tcpRead(c); err == nil && len(m.Answer) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no connection served after one of two closed")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("idle", func(t *testing.T) {
		srv, _ := brandServer(t, zone.Options{TCPIdle: 200 * time.Millisecond})
		c := dialTCP(t, srv.Addr())
		tcpQuery(t, c, 1, brandTXT)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := tcpRead(c); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if !closedByServer(t, c) {
			t.Fatal("an idle connection was not closed")
		}
		if took := time.Since(start); took < 150*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", took)
		}
		// A connection that never sends a query is closed too.
		silent := dialTCP(t, srv.Addr())
		if !closedByServer(t, silent) {
			t.Fatal("a silent connection was not closed")
		}
	})
}
