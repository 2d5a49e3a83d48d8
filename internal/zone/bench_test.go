package zone

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func benchRecords(n int) []Record {
	v := "v=DKIM1; k=rsa; p=" + strings.Repeat("M", 392)
	recs := make([]Record, 0, 2*n)
	for i := range n {
		for s := 1; s <= 2; s++ {
			recs = append(recs, Record{Name: fmt.Sprintf("selector%d-d%07d-example-com._domainkey.oxcloud.zone", s, i), Value: v})
		}
	}
	return recs
}

func BenchmarkBuild(b *testing.B) {
	recs := benchRecords(10000)
	b.ResetTimer()
	for range b.N {
		if _, err := Build(testParams, 1, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}

func BenchmarkRespond(b *testing.B) {
	s, err := Build(testParams, 1, benchRecords(10000))
	if err != nil {
		b.Fatal(err)
	}
	hit, _ := new(dns.Msg).SetQuestion("selector1-d0000042-example-com._domainkey.oxcloud.zone.", dns.TypeTXT).Pack()
	miss, _ := new(dns.Msg).SetQuestion("selector1-nope-example-com._domainkey.oxcloud.zone.", dns.TypeTXT).Pack()
	out := make([]byte, maxTCPSize)
	for _, c := range []struct {
		name string
		q    []byte
	}{{"hit", hit}, {"miss", miss}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, d, _ := s.respond(out, c.q, false); d != Answered {
					b.Fatal(d)
				}
			}
		})
	}
}

// BenchmarkLiveHeap reports the heap a built snapshot holds per domain (two
// TXT records), after a collection.
func BenchmarkLiveHeap(b *testing.B) {
	const n = 100000
	recs := benchRecords(n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var keep []*Snapshot
	for range b.N {
		s, err := Build(testParams, 1, recs)
		if err != nil {
			b.Fatal(err)
		}
		keep = append(keep, s)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N*n), "bytes/domain")
	runtime.KeepAlive(keep)
}

// BenchmarkRespondLarge asks for scattered names of a 100,000-domain zone
// (DKIMD_BENCH_DOMAINS=1000000 for a million), so that lookups miss the CPU
// caches and TLB as they do under real load.
func BenchmarkRespondLarge(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("DKIMD_BENCH_DOMAINS")); err == nil {
		n = v
	}
	s, err := Build(testParams, 1, benchRecords(n))
	if err != nil {
		b.Fatal(err)
	}
	// As many distinct names as the dnsperf query file of make bench-dns
	// has, in a scattered order, so that few answers stay in the caches.
	var qs [][]byte
	for i := range 200000 {
		q, _ := new(dns.Msg).SetQuestion(fmt.Sprintf("selector%d-d%07d-example-com._domainkey.oxcloud.zone.", 1+i%2, (i*7919)%n), dns.TypeTXT).Pack()
		qs = append(qs, q)
	}
	out := make([]byte, maxTCPSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, d, st := s.respond(out, qs[i%len(qs)], false); d != Answered || st.Rcode != 0 {
			b.Fatal(d, st)
		}
	}
}

// BenchmarkCompact times the compaction an incremental build does once more
// than half of the arena is dead: a copy of every live entry and table
// (DKIMD_BENCH_DOMAINS=1000000 for a million domains). The update loop
// pays it; readers keep the old snapshot meanwhile.
func BenchmarkCompact(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("DKIMD_BENCH_DOMAINS")); err == nil {
		n = v
	}
	bld, err := newBuilder(testParams)
	if err != nil {
		b.Fatal(err)
	}
	if err := bld.begin(1, true); err != nil {
		b.Fatal(err)
	}
	for _, r := range benchRecords(n) {
		if _, err := bld.add(r); err != nil {
			b.Fatal(err)
		}
	}
	s := bld.finish()
	b.ResetTimer()
	for range b.N {
		bld.compact(s)
	}
	b.ReportMetric(float64(bld.arena.size)/float64(n), "arena-bytes/domain")
}

// BenchmarkEach walks a 10,000-domain zone as a zone transfer does (every
// record as a dns.RR, before miekg/dns packs it): B/op over the records is
// the garbage a first AXFR makes per record.
func BenchmarkEach(b *testing.B) {
	s, err := Build(testParams, 1, benchRecords(10000))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for range b.N {
		s.each(func(dns.RR) bool { n++; return true })
	}
	b.ReportMetric(float64(n)/float64(b.N), "records/op")
}
