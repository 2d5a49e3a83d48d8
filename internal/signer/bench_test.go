package signer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"dkimd/internal/signer/signertest"
)

// BenchmarkSign measures the library path, next to its ceiling (BenchmarkRawRSA);
// bench/sign (make bench-sign) puts it next to the HTTP endpoint, the milter
// and OpenDKIM. Compare cpu-ns/op: on a shared machine ns/op follows the load.
func BenchmarkSign(b *testing.B) {
	f := signertest.New(b)
	s := newSigner(b, f, nil)
	for _, size := range []int{2 << 10, 100 << 10} {
		for _, dom := range []struct{ name, domain string }{{"rsa", signertest.AlignedRSA}, {"rsa+ed25519", signertest.AlignedEd}} {
			msg := signertest.Message(dom.domain, size)
			b.Run(dom.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				cpu := signertest.StartCPU()
				for b.Loop() {
					if _, err := s.Sign(context.Background(), bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
				}
				cpu.Report(b)
			})
		}
	}
}

// BenchmarkRawRSA is the ceiling of BenchmarkSign/rsa: a bare RSA-2048
// PKCS#1 v1.5 signature with the same key, as bench/sign's "raw RSA-2048".
func BenchmarkRawRSA(b *testing.B) {
	f := signertest.New(b)
	priv := f.ActiveRSAKey(b, signertest.AlignedRSA)
	digest := sha256.Sum256([]byte("raw crypto"))
	b.ReportAllocs()
	cpu := signertest.StartCPU()
	for b.Loop() {
		if _, err := priv.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b)
}

func sizeName(n int) string {
	if n >= 100<<10 {
		return "100KB"
	}
	return "2KB"
}
