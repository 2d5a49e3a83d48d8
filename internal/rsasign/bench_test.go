package rsasign_test

import (
	"crypto"
	"crypto/sha256"
	"syscall"
	"testing"
	"time"

	"dkimd/internal/rsasign"
)

// BenchmarkSign is one bare RSA-2048 signature per backend, on one
// goroutine: signatures per CPU-second of this process (sig/CPU-s), to
// read beside `openssl speed rsa2048`, which also counts CPU time. On a
// shared machine the wall-clock ns/op moves with the neighbours' load.
func BenchmarkSign(b *testing.B) {
	k := key2048(b, 0)
	d := sha256.Sum256([]byte("bench"))
	for _, name := range []string{rsasign.Go, rsasign.OpenSSL} {
		b.Run(name, func(b *testing.B) {
			be, _, err := rsasign.Select(name)
			if err != nil {
				b.Skip(err)
			}
			s, err := be.Signer(k)
			if err != nil {
				b.Fatal(err)
			}
			cpu0 := processCPU(b)
			for b.Loop() {
				if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/(processCPU(b)-cpu0).Seconds(), "sig/CPU-s")
		})
	}
}

// BenchmarkSignParallel signs on GOMAXPROCS goroutines at once: with
// every P inside a long cgo call, the Go scheduler hands Ps off and wakes
// threads around the calls, which a single goroutine does not show.
func BenchmarkSignParallel(b *testing.B) {
	k := key2048(b, 0)
	d := sha256.Sum256([]byte("bench"))
	for _, name := range []string{rsasign.Go, rsasign.OpenSSL} {
		b.Run(name, func(b *testing.B) {
			be, _, err := rsasign.Select(name)
			if err != nil {
				b.Skip(err)
			}
			s, err := be.Signer(k)
			if err != nil {
				b.Fatal(err)
			}
			cpu0 := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/(processCPU(b)-cpu0).Seconds(), "sig/CPU-s")
		})
	}
}

// BenchmarkSignRatio alternates the two backends signature by signature,
// so that a shared machine's drift falls on both alike, and reports
// OpenSSL's rate over Go's (openssl/go).
func BenchmarkSignRatio(b *testing.B) {
	k := key2048(b, 0)
	ossl := openssl(b)
	o, err := ossl.Signer(k)
	if err != nil {
		b.Fatal(err)
	}
	g, _ := rsasign.Backend{}.Signer(k)
	d := sha256.Sum256([]byte("bench"))
	var tGo, tOSSL time.Duration
	for b.Loop() {
		for _, s := range []struct {
			s crypto.Signer
			t *time.Duration
		}{{g, &tGo}, {o, &tOSSL}} {
			t0 := time.Now()
			if _, err := s.s.Sign(nil, d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
			*s.t += time.Since(t0)
		}
	}
	b.ReportMetric(float64(tGo.Microseconds())/float64(b.N), "go-µs/sig")
	b.ReportMetric(float64(tOSSL.Microseconds())/float64(b.N), "openssl-µs/sig")
	b.ReportMetric(float64(tGo)/float64(tOSSL), "openssl/go")
}

// processCPU is the CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
