package zone

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"dkimd/internal/accept"

	"github.com/miekg/dns"
)

// batchSize is how many datagrams one recvmmsg/sendmmsg system call moves.
// Under load the system calls are most of a query's cost; batching them is
// what NSD does too.
const batchSize = 32

// batchIO reads datagrams in batches and sends replies to their senders.
type batchIO interface {
	read() (int, error)          // fills packets 0..n-1
	packet(i int) []byte         // payload of packet i
	from(i int) netip.Addr       // sender of packet i
	reply(k, i int, resp []byte) // the k-th reply goes to the sender of packet i
	write(k int) error           // sends replies 0..k-1
}

// warmSink keeps what warm read, so that the compiler keeps its loads.
var warmSink atomic.Uint64

// serveUDPBatch answers the datagrams of one socket until it is closed.
func (s *Server) serveUDPBatch(c *net.UDPConn) {
	b, err := newBatchIO(c)
	if err != nil {
		s.log.Error("UDP socket cannot batch", slog.String("err", err.Error()))
		return
	}
	s.serveBatches(b)
}

// serveBatches answers every datagram that is waiting (up to batchSize)
// from one snapshot and sends the answers in one call, until b is closed.
func (s *Server) serveBatches(b batchIO) {
	outBufs := make([][]byte, batchSize)
	for i := range outBufs {
		outBufs[i] = make([]byte, 0, 2*maxUDPSize)
	}
	qs := make([]query, batchSize)
	var warmed uint64 // what warm read; kept so that its loads are not dropped
	var n uint64
	var pause time.Duration
	for {
		got, err := b.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				warmSink.Add(warmed)
				return
			}
			// An error that persists (the socket broken under us, the
			// kernel out of memory) would spin this loop on a core: count
			// it and pause as an accept loop does, 5 ms doubling to 1 s.
			pause = min(max(2*pause, accept.First), accept.Max)
			s.m.readErrors.Inc()
			s.log.Warn("UDP read failed; pausing", slog.String("err", err.Error()), slog.Duration("pause", pause))
			time.Sleep(pause)
			continue
		}
		pause = 0
		var start time.Time
		if n += uint64(got); n%durationSample < uint64(got) {
			start = time.Now()
		}
		snap := s.cur.Load()
		for i := 0; i < got; i++ {
			qs[i].prepare(b.packet(i))
		}
		warmed += warm(snap.chunks, snap.shards, qs[:got])
		var sec uint64 // the RRL window, read once per batch when needed
		k := 0
		for i := 0; i < got; i++ {
			q := b.packet(i)
			resp, disp, st := snap.respondTo(outBufs[k][:0], q, false, &qs[i])
			switch disp {
			case Dropped:
				continue
			case Special:
				resp, st = s.specialUDP(q, b.from(i))
				if resp == nil {
					continue
				}
			}
			if s.rrl != nil {
				if sec == 0 {
					sec = uint64(s.now().Unix())
				}
				ident := st.ident
				if ident == 0 {
					ident = identError + uint64(st.Rcode)
				}
				switch s.rrl.check(b.from(i), ident, sec) {
				case rrlDrop:
					s.m.rrlDropped.Inc()
					continue
				case rrlSlip:
					s.m.rrlSlipped.Inc()
					resp = slipped(resp)
				}
			}
			s.m.count(st)
			b.reply(k, i, resp)
			k++
		}
		_ = b.write(k) // a lost UDP answer is retried by the client
		if !start.IsZero() {
			// Per query: the batch's time divided over its queries.
			s.m.duration.Observe(time.Since(start).Seconds() / float64(max(got, 1)))
		}
	}
}

// specialUDP answers what the fast path does not: NOTIFY, zone transfer
// requests and TSIG-signed messages.
func (s *Server) specialUDP(raw []byte, from netip.Addr) ([]byte, Stat) {
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil || len(req.Question) != 1 {
		return header(make([]byte, 12), raw, dns.RcodeFormatError), Stat{Rcode: dns.RcodeFormatError}
	}
	st := Stat{Qtype: req.Question[0].Qtype}
	tsig := req.IsTsig()
	signed := false
	if tsig != nil {
		if s.opts.TSIG == nil || !strings.EqualFold(tsig.Hdr.Name, s.opts.TSIG.Name) ||
			dns.TsigVerify(append([]byte(nil), raw...), s.opts.TSIG.Secret, "", false) != nil { // it rewrites its input
			r := new(dns.Msg)
			r.SetRcode(req, dns.RcodeNotAuth)
			out, err := r.Pack()
			if err != nil {
				return nil, st
			}
			st.Rcode = dns.RcodeNotAuth
			return out, st
		}
		signed = true
	}
	reply := s.reply(req, from, signed, false)
	st.Rcode = reply.Rcode
	if signed {
		reply.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
		out, _, err := dns.TsigGenerate(reply, s.opts.TSIG.Secret, tsig.MAC, false)
		if err != nil {
			return nil, st
		}
		return out, st
	}
	out, err := reply.Pack()
	if err != nil {
		return nil, st
	}
	return out, st
}
