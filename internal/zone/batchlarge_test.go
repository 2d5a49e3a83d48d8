package zone

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/miekg/dns"
)

// scatterBatch feeds the UDP loop batches of 32 different queries from a
// list of 200,000 scattered names, as dnsperf's query file does, so that
// lookups miss the caches as they do under real load.
type scatterBatch struct {
	qs      [][]byte
	off     int
	reads   int
	replies int
}

func (f *scatterBatch) read() (int, error) {
	if f.reads == 0 {
		return 0, net.ErrClosed
	}
	f.reads--
	f.off = (f.off + batchSize) % (len(f.qs) - batchSize)
	return batchSize, nil
}
func (f *scatterBatch) packet(i int) []byte    { return f.qs[f.off+i] }
func (f *scatterBatch) from(int) netip.Addr    { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }
func (f *scatterBatch) reply(int, int, []byte) {}
func (f *scatterBatch) write(k int) error      { f.replies += k; return nil }

// BenchmarkServeBatchLarge is the UDP loop over a 100,000-domain zone
// (DKIMD_BENCH_DOMAINS=1000000 for a million), 32 scattered names a batch.
func BenchmarkServeBatchLarge(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("DKIMD_BENCH_DOMAINS")); err == nil {
		n = v
	}
	s := batchServer(b, n, Options{})
	f := &scatterBatch{}
	for i := range 200000 {
		q, _ := new(dns.Msg).SetQuestion(fmt.Sprintf("selector%d-d%07d-example-com._domainkey.oxcloud.zone.", 1+i%2, (i*7919)%n), dns.TypeTXT).Pack()
		f.qs = append(f.qs, q)
	}
	f.reads = b.N
	b.ReportAllocs()
	b.ResetTimer()
	s.serveBatches(f)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/query")
	if f.replies != b.N*batchSize {
		b.Fatalf("%d replies, want %d", f.replies, b.N*batchSize)
	}
}
