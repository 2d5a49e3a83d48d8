package zone

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Zone transfers (AXFR, RFC 5936; IXFR, RFC 1995) over TCP to the
// --xfr-allow addresses with the TSIG key.

// allowed says whether addr may transfer the zone.
func (s *Server) allowed(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range s.opts.XFRAllow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// transfer sends the zone by AXFR, also for IXFR (RFC 1995 §4 allows a
// full transfer as the answer), or only the SOA when the client is current.
func (s *Server) transfer(w dns.ResponseWriter, req *dns.Msg, from netip.Addr, signed bool) int {
	if !signed || !s.allowed(from) {
		s.m.xfrs.WithLabelValues("refused").Inc()
		s.log.Warn("zone transfer refused", slog.String("remote", from.String()), slog.Bool("tsig", signed))
		r := new(dns.Msg)
		r.SetRcode(req, dns.RcodeRefused)
		_ = w.WriteMsg(r)
		return dns.RcodeRefused
	}
	snap := s.cur.Load()
	soa := snap.params.soa(snap.serial)
	kind := "axfr"
	var deltas []delta
	if req.Question[0].Qtype == dns.TypeIXFR && len(req.Ns) == 1 {
		if have, ok := req.Ns[0].(*dns.SOA); ok {
			if !serialLess(have.Serial, snap.serial) {
				r := new(dns.Msg)
				r.SetReply(req)
				r.Authoritative = true
				r.Answer = []dns.RR{soa}
				r.SetTsig(req.IsTsig().Hdr.Name, req.IsTsig().Algorithm, 300, time.Now().Unix())
				_ = w.WriteMsg(r)
				s.m.xfrs.WithLabelValues("current").Inc()
				return dns.RcodeSuccess
			}
			if deltas = s.deltasSince(have.Serial, snap.serial); deltas != nil {
				kind = "ixfr"
			}
		}
	}
	var err error
	if deltas == nil {
		err = s.writeAXFR(w, req, snap)
	} else {
		err = writeIXFR(w, req, snap, deltas)
	}
	if err != nil {
		s.m.xfrs.WithLabelValues("failed").Inc()
		s.log.Warn("zone transfer failed", slog.String("remote", from.String()), slog.String("err", err.Error()))
		return dns.RcodeServerFailure
	}
	s.m.xfrs.WithLabelValues(kind).Inc()
	s.log.Info("zone transferred", slog.String("kind", kind), slog.String("remote", from.String()), slog.Uint64("serial", uint64(snap.serial)))
	return dns.RcodeSuccess
}

// writeIXFR sends the changes since the secondary's serial (RFC 1995 §4),
// a few records, through miekg/dns's transfer writer.
func writeIXFR(w dns.ResponseWriter, req *dns.Msg, snap *Snapshot, deltas []delta) error {
	soa := snap.params.soa(snap.serial)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan *dns.Envelope)
	go func() {
		defer close(ch)
		batch := []dns.RR{soa}
		size := 0
		emit := func(rr dns.RR) bool {
			batch = append(batch, rr)
			size += dns.Len(rr)
			if size <= axfrMsgTarget {
				return true
			}
			select {
			case ch <- &dns.Envelope{RR: batch}:
				batch, size = nil, 0
				return true
			case <-ctx.Done():
				return false
			}
		}
		if sendDeltas(snap.params, deltas, emit) {
			batch = append(batch, soa)
			select {
			case ch <- &dns.Envelope{RR: batch}:
			case <-ctx.Done():
			}
		}
	}()
	err := new(dns.Transfer).Out(w, req, ch)
	cancel()
	for range ch { // let the producer finish
	}
	return err
}

// delta is what changed between two consecutive snapshots.
type delta struct {
	from, to       uint32
	removed, added []txtRecord
}

// Deltas kept for IXFR: enough for secondaries that are a few changes
// behind; a secondary further behind gets a full transfer.
const (
	maxDeltas       = 256
	maxDeltaRecords = 200000
)

func (s *Server) recordDelta(from, to uint32, removed, added []txtRecord) {
	// An owner's unchanged records are removed and added again by replace;
	// they are no change for a secondary.
	same := map[string]int{}
	for _, r := range removed {
		same[r.name+"\x00"+string(r.body)]++
	}
	var add []txtRecord
	for _, r := range added {
		k := r.name + "\x00" + string(r.body)
		if same[k] > 0 {
			same[k]--
			continue
		}
		add = append(add, r)
	}
	var del []txtRecord
	for _, r := range removed {
		k := r.name + "\x00" + string(r.body)
		if same[k] > 0 {
			same[k]--
			del = append(del, r)
		}
	}
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if n := len(s.history); n > 0 && s.history[n-1].to != from {
		s.history = nil
	}
	s.history = append(s.history, delta{from: from, to: to, removed: del, added: add})
	total := 0
	for i := len(s.history) - 1; i >= 0; i-- {
		total += len(s.history[i].removed) + len(s.history[i].added)
		if total > maxDeltaRecords || len(s.history)-i > maxDeltas {
			s.history = append([]delta(nil), s.history[i+1:]...)
			break
		}
	}
}

// deltasSince is the chain of deltas from serial have to serial want, or
// nil when the history does not reach back that far.
func (s *Server) deltasSince(have, want uint32) []delta {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	for i, d := range s.history {
		if d.from == have {
			chain := s.history[i:]
			if chain[len(chain)-1].to != want {
				return nil
			}
			return append([]delta(nil), chain...)
		}
	}
	return nil
}

// sendDeltas emits the body of an incremental transfer: for each delta the
// old SOA, the removed records, the new SOA and the added records.
func sendDeltas(p Params, deltas []delta, emit func(dns.RR) bool) bool {
	for _, d := range deltas {
		for _, part := range []struct {
			serial uint32
			recs   []txtRecord
		}{{d.from, d.removed}, {d.to, d.added}} {
			if !emit(p.soa(part.serial)) {
				return false
			}
			for _, r := range part.recs {
				ans, _, _, err := unrender(r.name, dns.TypeTXT, r.body)
				if err != nil {
					continue
				}
				for _, rr := range ans {
					if !emit(rr) {
						return false
					}
				}
			}
		}
	}
	return true
}

// serialLess is RFC 1982 serial number arithmetic.
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }
