package zone

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Limits of DNS over TCP (RFC 7766): a connection that sends nothing for
// tcpIdle is closed (its §6.2.3 suggests seconds, NSD's tcp-timeout is
// 120 s, but a cap of connections makes an idle one expensive), and at
// most tcpMax are open at once; one beyond that is closed as soon as it is
// accepted, so that a flood of idle connections costs descriptors only up
// to the cap and never stops the other listeners (docs/reliability.md).
const (
	defaultTCPMax  = 1000
	defaultTCPIdle = 10 * time.Second
)

// capListener hands out at most max connections at once; the ones beyond
// are closed at once and counted.
type capListener struct {
	net.Listener
	max      int64
	open     *atomic.Int64
	rejected func()
	conns    *sync.Map // remote address → *cappedConn, for zone transfers
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			l.rejected()
			continue
		}
		cc := &cappedConn{Conn: c, open: l.open, conns: l.conns}
		if l.conns != nil {
			l.conns.Store(c.RemoteAddr().String(), cc)
		}
		return cc, nil
	}
}

// cappedConn gives its place back when it is closed (miekg/dns closes every
// connection it has served, after the idle timeout at the latest).
type cappedConn struct {
	net.Conn
	open  *atomic.Int64
	conns *sync.Map
	once  sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.open.Add(-1)
		if c.conns != nil {
			c.conns.CompareAndDelete(c.RemoteAddr().String(), c)
		}
	})
	return err
}

// acceptFailed hears of a temporary accept error of the TCP listener when
// no Options.RetryAccept was given.
func (s *Server) acceptFailed(err error, pause time.Duration) {
	s.log.Warn("DNS TCP accept failed; retrying", slog.String("err", err.Error()), slog.Duration("pause", pause))
}

// acceptQueries lets every request through to ServeDNS, which answers
// UPDATE and other opcodes itself; responses are never answered.
func acceptQueries(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// ServeDNS is the TCP path (miekg/dns reads the length-prefixed messages
// and checks TSIG): a thin adapter over the same wire answers as UDP, plus
// zone transfers.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	from := addrOf(w.RemoteAddr())
	st := Stat{}
	if len(req.Question) == 1 {
		st.Qtype = req.Question[0].Qtype
	}
	counted := true
	defer func() {
		if counted {
			s.m.count(st)
		}
	}()
	tsig := req.IsTsig()
	if tsig != nil && w.TsigStatus() != nil {
		r := new(dns.Msg)
		r.SetRcode(req, dns.RcodeNotAuth)
		st.Rcode = dns.RcodeNotAuth
		_ = w.WriteMsg(r)
		return
	}
	signed := tsig != nil
	if len(req.Question) == 1 && req.Opcode == dns.OpcodeQuery &&
		(req.Question[0].Qtype == dns.TypeAXFR || req.Question[0].Qtype == dns.TypeIXFR) {
		st.Rcode = s.transfer(w, req, from, signed)
		return
	}
	if !signed && req.Opcode != dns.OpcodeNotify {
		raw, err := req.Pack()
		if err == nil {
			buf := make([]byte, maxTCPSize)
			out, disp, rst := s.cur.Load().respond(buf, raw, true)
			if disp == Dropped {
				counted = false
				return
			}
			if disp == Answered {
				st = rst
				_, _ = w.Write(out)
				return
			}
		}
	}
	if len(req.Question) != 1 {
		r := new(dns.Msg)
		r.SetRcode(req, dns.RcodeFormatError)
		st.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(r)
		return
	}
	r := s.reply(req, from, signed, true)
	if signed {
		r.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
	}
	st.Rcode = r.Rcode
	_ = w.WriteMsg(r)
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
