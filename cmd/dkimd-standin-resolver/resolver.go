package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver answers recursive queries from its two sources.
type Resolver struct {
	Zone    string // dkimd's zone: forwarded
	Forward string // dkimd's DNS server, host:port
	Records string // the customers' zone file
	Log     *slog.Logger

	mu      sync.Mutex
	modTime time.Time
	size    int64
	rrs     []dns.RR
}

// maxChain bounds CNAME chains, as real resolvers do.
const maxChain = 8

// Servers are the UDP and TCP servers of one Listen.
type Servers struct{ udp, tcp *dns.Server }

// Close stops both.
func (s *Servers) Close() error {
	return errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
}

// Listen serves on addr over UDP and TCP until Close.
func (r *Resolver) Listen(addr string) (*Servers, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	s := &Servers{udp: &dns.Server{PacketConn: pc, Handler: r}, tcp: &dns.Server{Listener: ln, Handler: r}}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
	}
	return s, nil
}

// ServeDNS answers one query as a recursive resolver would: the whole CNAME
// chain, then the records at its end.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	m.Answer, m.Rcode = r.resolve(q.Question[0])
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		m.Answer = nil
	}
	if udp, ok := w.RemoteAddr().(*net.UDPAddr); ok && udp != nil {
		size := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
			m.SetEdns0(o.UDPSize(), false)
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

func (r *Resolver) resolve(question dns.Question) ([]dns.RR, int) {
	customer, err := r.customer()
	if err != nil {
		r.Log.Error("customers' zone file", slog.Any("err", err))
		return nil, dns.RcodeServerFailure
	}
	var answer []dns.RR
	name := dns.CanonicalName(question.Name)
	for range maxChain {
		if r.inZone(name) {
			rrs, rcode, err := r.forward(name, question.Qtype)
			if err != nil {
				r.Log.Warn("forward failed", slog.String("name", name), slog.Any("err", err))
				return nil, dns.RcodeServerFailure
			}
			return append(answer, rrs...), rcode
		}
		var next string
		found := false
		for _, rr := range customer {
			if dns.CanonicalName(rr.Header().Name) != name {
				continue
			}
			found = true
			switch {
			case rr.Header().Rrtype == question.Qtype || question.Qtype == dns.TypeANY:
				answer = append(answer, dns.Copy(rr))
			case rr.Header().Rrtype == dns.TypeCNAME:
				answer = append(answer, dns.Copy(rr))
				next = dns.CanonicalName(rr.(*dns.CNAME).Target)
			}
		}
		switch {
		case next != "" && question.Qtype != dns.TypeCNAME:
			name = next
		case !found:
			return answer, dns.RcodeNameError
		default:
			return answer, dns.RcodeSuccess
		}
	}
	return nil, dns.RcodeServerFailure
}

func (r *Resolver) inZone(name string) bool {
	return dns.IsSubDomain(dns.Fqdn(r.Zone), name)
}

// forward asks dkimd's server, over TCP when the UDP answer is truncated.
func (r *Resolver) forward(name string, qtype uint16) ([]dns.RR, int, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = false
	q.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(q, r.Forward)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.Exchange(q, r.Forward)
	}
	if err != nil {
		return nil, 0, err
	}
	return resp.Answer, resp.Rcode, nil
}

// customer returns the customers' records, reading the file again when its
// size or modification time changed. A missing file holds no records.
func (r *Resolver) customer() ([]dns.RR, error) {
	st, err := os.Stat(r.Records)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.ModTime().Equal(r.modTime) && st.Size() == r.size && r.rrs != nil {
		return r.rrs, nil
	}
	rrs, err := parseRecords(r.Records)
	if err != nil {
		return nil, err
	}
	r.rrs, r.modTime, r.size = rrs, st.ModTime(), st.Size()
	return rrs, nil
}

func parseRecords(path string) ([]dns.RR, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zp := dns.NewZoneParser(f, ".", path)
	zp.SetDefaultTTL(300)
	rrs := []dns.RR{}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rrs, nil
}
