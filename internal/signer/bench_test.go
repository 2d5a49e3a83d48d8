package signer_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"dkimd/internal/signer/signertest"
)

// BenchmarkSign measures the library path; bench/sign (make bench-sign)
// puts it next to the raw crypto, the HTTP endpoint, the milter and OpenDKIM.
func BenchmarkSign(b *testing.B) {
	f := signertest.New(b)
	s := newSigner(b, f, nil)
	for _, size := range []int{2 << 10, 100 << 10} {
		for _, dom := range []struct{ name, domain string }{{"rsa", signertest.AlignedRSA}, {"rsa+ed25519", signertest.AlignedEd}} {
			body := strings.Repeat("The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n", size/64)
			msg := []byte(message(dom.domain, body))
			b.Run(dom.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					if _, err := s.Sign(context.Background(), bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 100<<10 {
		return "100KB"
	}
	return "2KB"
}
