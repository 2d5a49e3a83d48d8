package zone

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// notifyLoop tells every secondary of each new serial (RFC 1996), retrying
// a few times until it acknowledges.
func (s *Server) notifyLoop(ctx context.Context) {
	if s.opts.TSIG == nil || len(s.opts.Secondaries) == 0 {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		}
		serial := s.cur.Load().serial
		for _, sec := range s.opts.Secondaries {
			wg.Add(1)
			go func() { defer wg.Done(); s.sendNotify(ctx, sec, serial) }()
		}
	}
}

func (s *Server) sendNotify(ctx context.Context, addr string, serial uint32) {
	k := s.opts.TSIG
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, TsigSecret: map[string]string{k.Name: k.Secret}}
	wait := time.Second
	for attempt := 1; attempt <= 5; attempt++ {
		if cur := s.cur.Load(); cur.serial != serial {
			return // a newer serial has its own NOTIFY
		}
		m := new(dns.Msg)
		m.SetNotify(s.zoneFQ)
		m.Answer = []dns.RR{s.opts.Params.soa(serial)}
		m.SetTsig(k.Name, k.Algorithm, 300, time.Now().Unix())
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			s.m.notifies.WithLabelValues("ok").Inc()
			s.log.Debug("secondary notified", slog.String("secondary", addr), slog.Uint64("serial", uint64(serial)))
			return
		}
		s.m.notifies.WithLabelValues("failed").Inc()
		if err == nil {
			err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		s.log.Warn("NOTIFY to secondary failed", slog.String("secondary", addr), slog.Int("attempt", attempt), slog.String("err", err.Error()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}
