package zone

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchSize is how many datagrams one recvmmsg/sendmmsg system call moves.
// Under load the system calls are most of a query's cost; batching them is
// what NSD does too.
const batchSize = 32

// batchConn is what ipv4 and ipv6 PacketConns share (Message is the same
// type in both packages).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn) batchConn {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}

// serveUDPBatch is serveUDP with batched system calls: it reads every
// datagram that is waiting (up to batchSize), answers each from the same
// snapshot, and sends the answers in one call.
func (s *Server) serveUDPBatch(c *net.UDPConn) {
	pc := newBatchConn(c)
	in := make([]ipv4.Message, batchSize)
	out := make([]ipv4.Message, batchSize)
	outBufs := make([][]byte, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxTCPSize)}
		out[i].Buffers = [][]byte{nil}
		outBufs[i] = make([]byte, 0, 2*maxUDPSize)
	}
	var n uint64
	for {
		got, err := pc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var start time.Time
		if n += uint64(got); n%durationSample < uint64(got) {
			start = time.Now()
		}
		snap := s.cur.Load()
		k := 0
		for i := 0; i < got; i++ {
			q := in[i].Buffers[0][:in[i].N]
			resp, disp, st := snap.respond(outBufs[k][:0], q, false)
			switch disp {
			case Dropped:
				continue
			case Special:
				var from netip.Addr
				if ua, ok := in[i].Addr.(*net.UDPAddr); ok {
					from, _ = netip.AddrFromSlice(ua.IP)
				}
				resp, st = s.specialUDP(q, from.Unmap())
				if resp == nil {
					continue
				}
			}
			s.m.count(st)
			out[k].Buffers[0] = resp
			out[k].Addr = in[i].Addr
			k++
		}
		for sent := 0; sent < k; {
			w, err := pc.WriteBatch(out[sent:k], 0)
			if err != nil {
				break // a lost UDP answer is retried by the client
			}
			sent += w
		}
		if !start.IsZero() {
			// Per query: the batch's time divided over its queries.
			s.m.duration.Observe(time.Since(start).Seconds() / float64(max(got, 1)))
		}
	}
}
