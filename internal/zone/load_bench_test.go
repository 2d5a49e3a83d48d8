package zone

import (
	"context"
	"os"
	"runtime"
	"testing"

	"dkimd/internal/keystore"
)

// BenchmarkFullLoad times a full zone load from a store filled by
// bench/dns/load: DKIMD_BENCH_DATA_DIR=/tmp/x go test -bench FullLoad.
func BenchmarkFullLoad(b *testing.B) {
	dir := os.Getenv("DKIMD_BENCH_DATA_DIR")
	if dir == "" {
		b.Skip("DKIMD_BENCH_DATA_DIR is not set")
	}
	store, err := keystore.OpenSQLite(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var srv *Server
	for range b.N {
		srv, err = New(Options{Params: testParams}, store)
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Sync(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The last server's snapshot and builder bookkeeping: what a replica holds.
	domains := float64(srv.Snapshot().Records()) / 2
	b.ReportMetric(float64(srv.Snapshot().Records()), "records")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/domains, "live-bytes/domain")
	runtime.KeepAlive(srv)
}
