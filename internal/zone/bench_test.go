package zone

import (
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

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

// BenchmarkAXFR writes a signed full transfer of a 10,000-domain zone
// (DKIMD_BENCH_DOMAINS=1000000 for a million) to a connection that discards
// it: B/op is the garbage a first AXFR makes, all of it per transfer rather
// than per record.
func BenchmarkAXFR(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("DKIMD_BENCH_DOMAINS")); err == nil {
		n = v
	}
	s, err := Build(testParams, 1, benchRecords(n))
	if err != nil {
		b.Fatal(err)
	}
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	key := &TSIGKey{Name: "xfr.oxcloud.zone.", Algorithm: dns.HmacSHA256, Secret: secret}
	q := new(dns.Msg).SetAxfr("oxcloud.zone.")
	q.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
	raw, _, err := dns.TsigGenerate(q, secret, "", false)
	if err != nil {
		b.Fatal(err)
	}
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		b.Fatal(err)
	}
	var w countingWriter
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		chain, err := newTSIGChain(key, req.IsTsig())
		if err != nil {
			b.Fatal(err)
		}
		a, err := newAXFRWriter(&w, req, chain)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.writeAXFR(a); err != nil {
			b.Fatal(err)
		}
		a.release()
	}
	b.ReportMetric(float64(s.Records()), "records/op")
	b.ReportMetric(float64(w.n)/float64(b.N), "wire-bytes/op")
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
