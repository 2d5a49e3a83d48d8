package zone

// The server: its options, its sockets, and the one goroutine tree that
// serves UDP (udp.go), TCP (tcp.go), transfers (xfr.go) and NOTIFY
// (notify.go) and keeps the snapshot current (sync.go) until ctx ends.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/accept"
)

// Options configure a Server.
type Options struct {
	Params      Params
	Addr        string         // host:port for UDP and TCP
	Secondaries []string       // host:port to NOTIFY
	XFRAllow    []netip.Prefix // who may transfer, with TSIG
	TSIG        *TSIGKey       // nil: no transfers, no NOTIFY
	Reconcile   time.Duration  // compare serials this often; 0 means 30s
	// UDPSockets is the number of SO_REUSEPORT UDP sockets; 0 means GOMAXPROCS.
	UDPSockets int
	// RRL is the response-rate limit of UDP answers per second for one
	// answer to one source prefix (rrl.go); 0 disables it. Every
	// RRLSlip-th answer over it goes out empty with TC (0: none, all
	// dropped). Sources in RRLExempt are never limited.
	RRL       int
	RRLSlip   int
	RRLExempt []netip.Prefix
	// TCPMax caps the TCP connections open at once (0: 1000); TCPIdle
	// closes one that sends no query for that long (0: 10 s).
	TCPMax  int
	TCPIdle time.Duration
	Now     func() time.Time // the clock of the RRL windows; nil: time.Now
	// RetryAccept wraps the TCP listener so that a temporary accept error
	// (EMFILE) pauses and retries instead of ending the server, logged and
	// counted (cmd/dkimd gives ops.RetryAccept); nil: accept.Wrap with a
	// log line.
	RetryAccept func(net.Listener) net.Listener
	Log         *slog.Logger
	Registry    prometheus.Registerer // nil: a private registry
}

// Server serves the zone from the current snapshot.
type Server struct {
	opts    Options
	src     Source
	log     *slog.Logger
	m       *metrics
	cur     atomic.Pointer[Snapshot]
	kick    chan struct{}
	notify  chan struct{}
	syncMu  sync.Mutex
	b       *builder
	stale   bool // the builder's bookkeeping is unreliable: reload in full
	zoneFQ  string
	udp     []*net.UDPConn
	histMu  sync.Mutex
	history []delta // consecutive deltas, oldest first, for IXFR
	tcpLn   net.Listener
	tcpSrv  *dns.Server
	tcpOpen atomic.Int64 // TCP connections open now
	conns   sync.Map     // the open TCP connections by remote address (zone transfers write to them)
	rrl     *rrl         // nil: no rate limit
	now     func() time.Time
}

// New makes a server; Load or Sync fills it before it answers anything but
// SERVFAIL-free refusals.
func New(opts Options, src Source) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Reconcile <= 0 {
		opts.Reconcile = 30 * time.Second
	}
	if opts.TCPMax <= 0 {
		opts.TCPMax = defaultTCPMax
	}
	if opts.TCPIdle <= 0 {
		opts.TCPIdle = defaultTCPIdle
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("zone: metrics: %w", err)
	}
	b, err := newBuilder(opts.Params)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, src: src, log: opts.Log, m: m, b: b, stale: true,
		kick: make(chan struct{}, 1), notify: make(chan struct{}, 1), zoneFQ: fqdn(opts.Params.Zone),
		rrl: newRRL(opts.RRL, opts.RRLSlip, opts.RRLExempt), now: opts.Now}
	if err := opts.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dkimd_dns_tcp_connections", Help: "DNS TCP connections open now (at most --dns-tcp-max).",
	}, func() float64 { return float64(s.tcpOpen.Load()) })); err != nil {
		return nil, fmt.Errorf("zone: metrics: %w", err)
	}
	return s, nil
}

// Snapshot is the zone being served; nil before the first load.
func (s *Server) Snapshot() *Snapshot { return s.cur.Load() }

// Listen binds the UDP sockets and the TCP listener.
func (s *Server) Listen() error {
	n := s.opts.UDPSockets
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.listen(n); err == nil {
			return nil
		}
		s.closeListeners()
	}
	return err
}

func (s *Server) listen(n int) error {
	lc := listenConfig(n > 1)
	first, err := lc.ListenPacket(context.Background(), "udp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("zone: listen udp %s: %w", s.opts.Addr, err)
	}
	s.udp = append(s.udp, first.(*net.UDPConn))
	addr := first.LocalAddr().String() // the real port when Addr asked for :0
	for i := 1; i < n; i++ {
		c, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return fmt.Errorf("zone: listen udp %s: %w", addr, err)
		}
		s.udp = append(s.udp, c.(*net.UDPConn))
	}
	if s.tcpLn, err = (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr); err != nil {
		return fmt.Errorf("zone: listen tcp %s: %w", addr, err)
	}
	// Out of descriptors (EMFILE), accept pauses and retries rather than
	// ending the server; the cap sits above it so that a connection closed
	// for the cap costs no pause.
	retry := s.opts.RetryAccept
	if retry == nil {
		retry = func(ln net.Listener) net.Listener { return accept.Wrap(ln, s.acceptFailed) }
	}
	s.tcpLn = &capListener{Listener: retry(s.tcpLn), max: int64(s.opts.TCPMax),
		open: &s.tcpOpen, rejected: s.m.tcpRejected.Inc, conns: &s.conns}
	return nil
}

func (s *Server) closeListeners() {
	for _, c := range s.udp {
		c.Close()
	}
	s.udp = nil
	if s.tcpLn != nil {
		s.tcpLn.Close()
		s.tcpLn = nil
	}
}

// Addr is the bound address (UDP and TCP share the port).
func (s *Server) Addr() string {
	if len(s.udp) == 0 {
		return ""
	}
	return s.udp[0].LocalAddr().String()
}

// Serve answers queries and keeps the zone current until ctx ends. Listen
// must have been called; the first load happens here if none has.
func (s *Server) Serve(ctx context.Context) error {
	if s.cur.Load() == nil {
		if err := s.Sync(ctx); err != nil {
			return fmt.Errorf("zone: first load: %w", err)
		}
	}
	var wg sync.WaitGroup
	for _, c := range s.udp {
		wg.Add(1)
		go func() { defer wg.Done(); s.serveUDPBatch(c) }()
	}
	idle := s.opts.TCPIdle
	// miekg/dns answers a connection's queries in turn, as many as come:
	// the first must arrive within ReadTimeout, each next one within
	// IdleTimeout.
	s.tcpSrv = &dns.Server{Listener: s.tcpLn, Handler: s, MsgAcceptFunc: acceptQueries,
		ReadTimeout: idle, IdleTimeout: func() time.Duration { return idle }, WriteTimeout: 10 * time.Second,
		MaxTCPQueries: -1}
	if s.opts.TSIG != nil {
		s.tcpSrv.TsigSecret = map[string]string{s.opts.TSIG.Name: s.opts.TSIG.Secret}
	}
	tcpDone := make(chan error, 1)
	go func() { tcpDone <- s.tcpSrv.ActivateAndServe() }()

	loopCtx, stopLoops := context.WithCancel(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); s.updateLoop(loopCtx) }()
	go func() { defer wg.Done(); s.notifyLoop(loopCtx) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-tcpDone:
		err = fmt.Errorf("zone: tcp server: %w", err)
	}
	stopLoops()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := s.tcpSrv.ShutdownContext(shutCtx); serr != nil && err == nil && ctx.Err() == nil {
		err = serr
	}
	s.closeListeners()
	wg.Wait()
	return err
}

// reply answers a message on the full path (what the wire path hands on
// as Special, over UDP and TCP), except zone transfers over TCP, which
// stream (xfr.go).
func (s *Server) reply(req *dns.Msg, from netip.Addr, signed, tcp bool) *dns.Msg {
	r := new(dns.Msg)
	q := req.Question[0]
	switch {
	case req.Opcode == dns.OpcodeNotify:
		// We are the zone's primary; no one notifies us.
		r.SetRcode(req, dns.RcodeRefused)
		return r
	case q.Qtype == dns.TypeIXFR && !tcp && signed && s.allowed(from):
		// RFC 1995 §2: over UDP, an answer that does not fit is the SOA
		// alone, which tells the client to use TCP.
		r.SetReply(req)
		r.Authoritative = true
		snap := s.cur.Load()
		r.Answer = []dns.RR{snap.params.soa(snap.serial)}
		return r
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		r.SetRcode(req, dns.RcodeRefused)
		return r
	}
	// A signed plain query: answer it as the fast path would, then sign.
	plain := req.Copy()
	if tsig := plain.IsTsig(); tsig != nil {
		plain.Extra = plain.Extra[:len(plain.Extra)-1]
	}
	raw, err := plain.Pack()
	if err != nil {
		r.SetRcode(req, dns.RcodeFormatError)
		return r
	}
	buf := make([]byte, maxTCPSize)
	out, disp, _ := s.cur.Load().respond(buf, raw, tcp)
	if disp != Answered || r.Unpack(out) != nil {
		r = new(dns.Msg)
		r.SetRcode(req, dns.RcodeRefused)
	}
	return r
}
