package zone

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The limiter's arithmetic: rate answers a second pass, then every
// slip-th is slipped and the rest dropped; a new second starts afresh;
// prefixes, answers and exemptions are counted apart.
func TestRRLCheck(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	sameNet := netip.MustParseAddr("192.0.2.200")
	otherNet := netip.MustParseAddr("192.0.3.1")
	v6 := netip.MustParseAddr("2001:db8:0:ff::1")
	v6same := netip.MustParseAddr("2001:db8:0:1::2") // same /56: 2001:db8:0:0000::/56
	v6other := netip.MustParseAddr("2001:db8:0:100::1")
	tally := func(l *rrl, from netip.Addr, ident, sec uint64, n int) (pass, slip, drop int) {
		for range n {
			switch l.check(from, ident, sec) {
			case rrlPass:
				pass++
			case rrlSlip:
				slip++
			case rrlDrop:
				drop++
			}
		}
		return
	}
	cases := []struct {
		name             string
		rate, slip       int
		exempt           []netip.Prefix
		n                int
		pass, slp, dropd int
	}{
		{"slip 2", 5, 2, nil, 40, 5, 17, 18},
		{"slip 1 truncates all", 5, 1, nil, 40, 5, 35, 0},
		{"slip 0 drops all", 5, 0, nil, 40, 5, 0, 35},
		{"slip 3", 10, 3, nil, 40, 10, 10, 20},
		{"exempt", 5, 2, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, 40, 40, 0, 0},
		{"exempt elsewhere", 5, 2, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, 40, 5, 17, 18},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newRRL(c.rate, c.slip, c.exempt)
			p, s, d := tally(l, a, 1000, 7, c.n)
			if p != c.pass || s != c.slp || d != c.dropd {
				t.Fatalf("pass %d slip %d drop %d, want %d %d %d", p, s, d, c.pass, c.slp, c.dropd)
			}
		})
	}
	t.Run("apart", func(t *testing.T) {
		l := newRRL(3, 2, nil)
		if p, _, _ := tally(l, a, 1000, 7, 10); p != 3 {
			t.Fatalf("first flood: %d passed", p)
		}
		for _, c := range []struct {
			name  string
			from  netip.Addr
			ident uint64
			sec   uint64
			pass  int
		}{
			{"same /24", sameNet, 1000, 7, 0},
			{"other /24", otherNet, 1000, 7, 3},
			{"other answer", a, 2000, 7, 3},
			{"next second", a, 1000, 8, 3},
			{"v6", v6, 1000, 8, 3},
			{"v6 same /56", v6same, 1000, 8, 0},
			{"v6 other /56", v6other, 1000, 8, 3},
		} {
			if p, _, _ := tally(l, c.from, c.ident, c.sec, 10); p != c.pass {
				t.Errorf("%s: %d passed, want %d", c.name, p, c.pass)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		if newRRL(0, 2, nil) != nil {
			t.Fatal("rate 0 made a limiter")
		}
	})
}

func TestSlipped(t *testing.T) {
	s, err := Build(testParams, 1, benchRecords(10))
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg).SetQuestion("selector1-d0000003-example-com._domainkey.oxcloud.zone.", dns.TypeTXT)
	m.SetEdns0(1232, false)
	q, _ := m.Pack()
	resp, d, _ := s.respond(make([]byte, maxTCPSize), q, false)
	if d != Answered {
		t.Fatal(d)
	}
	out := new(dns.Msg)
	if err := out.Unpack(slipped(resp)); err != nil {
		t.Fatal(err)
	}
	if !out.Truncated || len(out.Answer)+len(out.Ns)+len(out.Extra) != 0 || len(out.Question) != 1 ||
		out.Question[0].Name != m.Question[0].Name || out.Id != m.Id || !out.Response {
		t.Fatalf("slipped answer is not an empty TC answer to the question:\n%v", out)
	}
	if len(slipped(resp)) > len(q) {
		t.Fatalf("slipped answer of %d octets is larger than the query (%d)", len(slipped(resp)), len(q))
	}
}

// fakeBatch feeds the UDP loop the same batch of queries reads times (after
// errs failed reads), then reports the socket closed; it counts replies.
type fakeBatch struct {
	qs      [][]byte
	froms   []netip.Addr
	errs    int
	reads   int
	replies int
	last    [][]byte
}

func (f *fakeBatch) read() (int, error) {
	if f.errs > 0 {
		f.errs--
		return 0, syscall.ENOMEM
	}
	if f.reads == 0 {
		return 0, net.ErrClosed
	}
	f.reads--
	return len(f.qs), nil
}
func (f *fakeBatch) packet(i int) []byte         { return f.qs[i] }
func (f *fakeBatch) from(i int) netip.Addr       { return f.froms[i] }
func (f *fakeBatch) reply(k, i int, resp []byte) { f.last[k] = resp }
func (f *fakeBatch) write(k int) error           { f.replies += k; return nil }

func newBatch(t testing.TB, names int, froms func(i int) netip.Addr) *fakeBatch {
	f := &fakeBatch{last: make([][]byte, batchSize)}
	for i := range batchSize {
		name := fmt.Sprintf("selector%d-d%07d-example-com._domainkey.oxcloud.zone.", 1+i%2, (i*7919)%names)
		if i%10 == 9 {
			name = fmt.Sprintf("selector1-nope%d-example-com._domainkey.oxcloud.zone.", i)
		}
		q, _ := new(dns.Msg).SetQuestion(name, dns.TypeTXT).Pack()
		f.qs = append(f.qs, q)
		f.froms = append(f.froms, froms(i))
	}
	return f
}

func batchServer(t testing.TB, names int, opts Options) *Server {
	opts.Params = testParams
	s, err := New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Build(testParams, 1, benchRecords(names))
	if err != nil {
		t.Fatal(err)
	}
	s.cur.Store(snap)
	return s
}

func loopback(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, byte(i % 4), 1}) }

// The UDP loop allocates nothing per query, with response-rate limiting
// off, on, and on for an exempted source: a run over a thousand batches
// allocates what a run over one does (the loop's own buffers).
func TestServeBatchesAllocs(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"rrl off", Options{}},
		{"rrl on", Options{RRL: 200, RRLSlip: 2}},
		{"rrl on, limiting", Options{RRL: 1, RRLSlip: 2}},
		{"rrl on, exempt", Options{RRL: 200, RRLSlip: 2, RRLExempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if raceEnabled {
				t.Skip("the race detector allocates on its own")
			}
			s := batchServer(t, 1000, c.opts)
			f := newBatch(t, 1000, loopback)
			allocs := func(reads int) float64 {
				return testing.AllocsPerRun(5, func() {
					f.reads = reads
					s.serveBatches(f)
				})
			}
			one, many := allocs(1), allocs(1000)
			if many > one {
				t.Fatalf("1000 batches allocate %.0f, one batch %.0f: the loop allocates per query", many, one)
			}
		})
	}
}

// A persistent read error is counted and paused on, 5 ms doubling, instead
// of spinning.
func TestServeBatchesReadErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := batchServer(t, 10, Options{Registry: reg})
	f := newBatch(t, 10, loopback)
	f.errs, f.reads = 4, 1
	start := time.Now()
	s.serveBatches(f)
	if took := time.Since(start); took < (5+10+20+40)*time.Millisecond {
		t.Fatalf("four read errors took %v: the loop did not pause", took)
	}
	if got := testutil.ToFloat64(s.m.readErrors); got != 4 {
		t.Fatalf("dkimd_dns_udp_read_errors_total = %v, want 4", got)
	}
	if f.replies != batchSize {
		t.Fatalf("%d replies after the errors passed, want %d", f.replies, batchSize)
	}
}

// BenchmarkServeBatch is the UDP loop without the sockets, 32 queries a
// batch (10% NXDOMAIN) from four /24s: ns/query is the loop's own cost per
// query, with response-rate limiting off, on (no answer over the limit),
// and on with the sources exempted.
func BenchmarkServeBatch(b *testing.B) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"rrl-off", Options{}},
		{"rrl-on", Options{RRL: 1 << 23, RRLSlip: 2}},
		{"rrl-exempt", Options{RRL: 200, RRLSlip: 2, RRLExempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := batchServer(b, 10000, c.opts)
			f := newBatch(b, 10000, loopback)
			f.reads = b.N
			b.ReportAllocs()
			b.ResetTimer()
			s.serveBatches(f)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/query")
			if f.replies != b.N*batchSize {
				b.Fatalf("%d replies, want %d", f.replies, b.N*batchSize)
			}
		})
	}
}
