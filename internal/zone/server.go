package zone

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/accept"
	"dkimd/internal/keystore"
)

// recordEstimator is a Source that can say cheaply about how many records a
// full load will bring, so that the builder sizes its tables once.
type recordEstimator interface {
	ZoneRecordEstimate(ctx context.Context) (int, error)
}

// Source is what the zone reads from the store.
type Source interface {
	Serial(ctx context.Context) (uint32, error)
	// ZoneRecords streams every record; a record's PublicKey is valid
	// only until fn returns (the Postgres store reuses its read buffer).
	ZoneRecords(ctx context.Context, fn func(keystore.ZoneRecord) error) error
	OwnerZoneRecords(ctx context.Context, kind keystore.OwnerKind, owner string) ([]keystore.ZoneRecord, error)
	ZoneChangesSince(ctx context.Context, after, upTo uint32) ([]keystore.ZoneChange, error)
	ZoneJournalFloor(ctx context.Context) (floor uint32, ok bool, err error)
}

// TSIGKey is the shared secret of zone transfers and NOTIFY.
type TSIGKey struct {
	Name      string // FQDN, lower case
	Algorithm string // e.g. hmac-sha256.
	Secret    string // base64
}

var tsigAlgorithms = map[string]string{
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

// ParseTSIGKey reads "name algorithm base64-secret".
func ParseTSIGKey(text string) (TSIGKey, error) {
	f := strings.Fields(text)
	if len(f) != 3 {
		return TSIGKey{}, errors.New(`zone: TSIG key must be "name algorithm base64-secret"`)
	}
	alg, ok := tsigAlgorithms[strings.ToLower(strings.TrimSuffix(f[1], "."))]
	if !ok {
		return TSIGKey{}, fmt.Errorf("zone: TSIG algorithm %q is not one of hmac-sha1, -sha224, -sha256, -sha384, -sha512", f[1])
	}
	if b, err := base64.StdEncoding.DecodeString(f[2]); err != nil || len(b) < 16 {
		return TSIGKey{}, errors.New("zone: TSIG secret must be base64 of at least 16 octets")
	}
	if _, ok := dns.IsDomainName(f[0]); !ok {
		return TSIGKey{}, fmt.Errorf("zone: TSIG key name %q is not a domain name", f[0])
	}
	return TSIGKey{Name: fqdn(f[0]), Algorithm: alg, Secret: f[2]}, nil
}

// LoadTSIGKey reads a TSIG key file.
func LoadTSIGKey(path string) (TSIGKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return TSIGKey{}, fmt.Errorf("zone: TSIG key file: %w", err)
	}
	return ParseTSIGKey(string(b))
}

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

// Kick asks the update loop to catch up with the store; it never blocks.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// maxIncremental: beyond this many changed owners a full reload is cheaper.
const maxIncremental = 5000

// Sync brings the snapshot up to the store's serial: incrementally from the
// change journal where it can, else by a full reload.
func (s *Server) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	// Read the serial first: whatever is read afterwards is at least that
	// new, and anything newer comes with a higher serial and is applied by
	// the next Sync (applying an owner twice is harmless).
	serial, err := s.src.Serial(ctx)
	if err != nil {
		return err
	}
	cur := s.cur.Load()
	switch {
	case cur != nil && !s.stale && serial == cur.serial:
		return nil
	case cur == nil || s.stale:
		return s.fullLoad(ctx, serial)
	case serial < cur.serial:
		s.log.Error("the database's zone serial went backwards; reloading from it",
			slog.Uint64("serial", uint64(serial)), slog.Uint64("served_serial", uint64(cur.serial)))
		return s.fullLoad(ctx, serial)
	}
	// The journal is pruned (keystore.ZoneJournalKeep): a replica that fell
	// further behind than it reaches must reload everything.
	if floor, ok, err := s.src.ZoneJournalFloor(ctx); err != nil {
		return err
	} else if !ok || cur.serial+1 < floor {
		s.log.Warn("zone change journal does not reach back to the served serial; reloading the whole zone",
			slog.Uint64("served_serial", uint64(cur.serial)), slog.Uint64("journal_floor", uint64(floor)))
		return s.fullLoad(ctx, serial)
	}
	changes, err := s.src.ZoneChangesSince(ctx, cur.serial, serial)
	if err != nil {
		return err
	}
	if len(changes) > maxIncremental {
		return s.fullLoad(ctx, serial)
	}
	start := time.Now()
	s.stale = true // until the builder is consistent again
	if err := s.b.begin(serial, false); err != nil {
		s.m.failed.Inc()
		return err
	}
	// All removals first, then all additions: two owners whose names
	// coincide (a domain deleted and another with the same label created in
	// one batch) must end with the record that the store has.
	published := make([][]Record, len(changes))
	for i, c := range changes {
		recs, err := s.src.OwnerZoneRecords(ctx, c.Kind, c.Owner)
		if err != nil {
			s.m.failed.Inc()
			return err
		}
		for _, r := range recs {
			if rec, ok := RecordOf(r, s.opts.Params.Zone); ok {
				published[i] = append(published[i], rec)
			}
		}
		if err := s.b.removeOwner(c); err != nil {
			s.m.failed.Inc()
			return err
		}
	}
	for _, recs := range published {
		if err := s.b.publish(recs); err != nil {
			s.m.failed.Inc()
			return err
		}
	}
	s.stale = false
	s.recordDelta(cur.serial, serial, s.b.removed, s.b.added)
	s.publish(s.b.finish())
	s.m.incr.Inc()
	s.log.Debug("zone updated", slog.Uint64("serial", uint64(serial)), slog.Int("owners", len(changes)),
		slog.Duration("took", time.Since(start)))
	return nil
}

func (s *Server) fullLoad(ctx context.Context, serial uint32) error {
	start := time.Now()
	s.stale = true
	if err := s.b.begin(serial, true); err != nil {
		s.m.failed.Inc()
		return err
	}
	if e, ok := s.src.(recordEstimator); ok {
		n, err := e.ZoneRecordEstimate(ctx)
		if err != nil {
			// Only the tables' doublings are at stake.
			s.log.Warn("zone size estimate failed", slog.String("error", err.Error()))
		}
		if cur := s.cur.Load(); cur != nil {
			n = max(n, cur.records)
		}
		s.b.presize(n)
	}
	kr := &keyRenderer{}
	err := s.src.ZoneRecords(ctx, func(r keystore.ZoneRecord) error { return s.b.addKey(kr, r) })
	if err != nil {
		s.m.failed.Inc()
		return err
	}
	s.stale = false
	s.histMu.Lock()
	s.history = nil // a full load has no delta to the previous snapshot
	s.histMu.Unlock()
	snap := s.b.finish()
	s.publish(snap)
	s.m.full.Inc()
	if snap.records > 10000 {
		// A full load of a large zone leaves the previous snapshot (if any)
		// and the load's garbage behind (GB at a million domains); queries allocate
		// nothing, so without this the process would keep that memory.
		debug.FreeOSMemory()
	}
	s.log.Info("zone loaded", slog.Uint64("serial", uint64(serial)), slog.Int("records", snap.records),
		slog.Duration("took", time.Since(start)))
	return nil
}

func (s *Server) publish(snap *Snapshot) {
	old := s.cur.Swap(snap)
	s.m.records.Set(float64(snap.records))
	s.m.serial.Set(float64(snap.serial))
	if old == nil || old.serial != snap.serial {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

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
		open: &s.tcpOpen, rejected: s.m.tcpRejected.Inc}
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

// reply answers a message on the full path, except zone transfers over
// TCP, which stream.
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
		ans, _, _, _ := s.cur.Load().Lookup(s.zoneFQ, dns.TypeSOA)
		r.Answer = ans
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
			if size <= 16000 {
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
		var ok bool
		if deltas != nil {
			ok = sendDeltas(snap.params, deltas, emit) // RFC 1995 §4: incremental
		} else {
			ok = snap.each(emit)
		}
		if ok {
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
	if err != nil {
		s.m.xfrs.WithLabelValues("failed").Inc()
		s.log.Warn("zone transfer failed", slog.String("remote", from.String()), slog.Any("error", err))
		return dns.RcodeServerFailure
	}
	s.m.xfrs.WithLabelValues(kind).Inc()
	s.log.Info("zone transferred", slog.String("kind", kind), slog.String("remote", from.String()), slog.Uint64("serial", uint64(snap.serial)))
	return dns.RcodeSuccess
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

// each calls fn with every record of the zone except the SOA, apex first;
// it stops when fn returns false and reports whether it went through.
func (s *Snapshot) each(fn func(dns.RR) bool) bool {
	emit := func(name string, n node) bool {
		for _, a := range n.answers() {
			if a.qtype == dns.TypeSOA {
				continue
			}
			ans, _, _, err := unrender(name, a.qtype, a.body)
			if err != nil {
				continue
			}
			for _, rr := range ans {
				if !fn(rr) {
					return false
				}
			}
		}
		return true
	}
	if n, ok := s.get(s.zoneWire); ok && !emit(fqdn(s.params.Zone), n) {
		return false
	}
	return eachEntry(s.chunks, s.shards, func(key []byte, n node) bool {
		if string(key) == string(s.zoneWire) {
			return true
		}
		name, _, err := dns.UnpackDomainName(key, 0)
		if err != nil {
			return true
		}
		return emit(name, n)
	})
}

func (s *Server) updateLoop(ctx context.Context) {
	tick := time.NewTicker(s.opts.Reconcile)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		case <-retry:
		}
		retry = nil
		if err := s.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("zone update failed; serving the previous snapshot", slog.Any("error", err), slog.Duration("retry_in", backoff))
			retry = time.After(backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

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
		s.log.Warn("NOTIFY to secondary failed", slog.String("secondary", addr), slog.Int("attempt", attempt), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}
