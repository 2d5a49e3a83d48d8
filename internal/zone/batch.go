package zone

import (
	"errors"
	"net"
	"net/netip"
	"time"
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

// serveUDPBatch answers every datagram that is waiting (up to batchSize)
// from one snapshot and sends the answers in one call.
func (s *Server) serveUDPBatch(c *net.UDPConn) {
	b, err := newBatchIO(c)
	if err != nil {
		s.log.Error("UDP socket cannot batch", "error", err)
		return
	}
	outBufs := make([][]byte, batchSize)
	for i := range outBufs {
		outBufs[i] = make([]byte, 0, 2*maxUDPSize)
	}
	var n uint64
	for {
		got, err := b.read()
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
			q := b.packet(i)
			resp, disp, st := snap.respond(outBufs[k][:0], q, false)
			switch disp {
			case Dropped:
				continue
			case Special:
				resp, st = s.specialUDP(q, b.from(i))
				if resp == nil {
					continue
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
