package dkim_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"dkimd/internal/dkim"
	"dkimd/internal/signer/signertest"
)

// BenchmarkCanonHash compares, on the message bench/sign sends (2 KB and
// 100 KB, CRLF), the core's canonicalize-and-hash (header parse and
// selection, relaxed body, SHA-256) with go-msgauth's signer doing the same
// and with bare crypto/sha256 over the same bytes, the ceiling. The
// "+ed25519" rows add one Ed25519 signature, so that the core's row is
// comparable with go-msgauth's, which cannot hash without signing.
// On a shared machine wall time follows other people's load: compare the
// cpu-MB/s column (bytes over this process's CPU time, signertest.CPUClock).
// docs/performance.md, "Signing core", has the figures.
func BenchmarkCanonHash(b *testing.B) {
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{2 << 10, 100 << 10} {
		msg := signertest.Message("b.example", size)
		i := bytes.Index(msg, []byte("\r\n\r\n"))
		head, body := msg[:i+4], msg[i+4:]
		name := "2KB"
		if size > 2<<10 {
			name = "100KB"
		}
		core := func(sign bool) func(b *testing.B) {
			return func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				var h dkim.Header
				bh := dkim.NewBodyHash()
				var list []string
				var data, sum []byte
				defer cpuRate(b, len(msg))()
				for b.Loop() {
					if err := h.Parse(head); err != nil {
						b.Fatal(err)
					}
					list, data = h.Select(list[:0], data[:0])
					bh.Reset()
					bh.Write(body)
					sum = bh.Sum(sum[:0])
					if sign {
						if _, err := dkim.Sign(data, sum, &dkim.Signature{Domain: "b.example", Selector: "s", Key: ek, Time: time.Now(), Headers: list}); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
		}
		b.Run("core/"+name, core(false))
		b.Run("core+ed25519/"+name, core(true))
		b.Run("go-msgauth+ed25519/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			defer cpuRate(b, len(msg))()
			for b.Loop() {
				s, err := msgauth.NewSigner(&msgauth.SignOptions{Domain: "b.example", Selector: "s", Signer: ek,
					HeaderCanonicalization: msgauth.CanonicalizationRelaxed, BodyCanonicalization: msgauth.CanonicalizationRelaxed})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Write(msg); err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("sha256/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			defer cpuRate(b, len(msg))()
			for b.Loop() {
				sha256.Sum256(msg)
			}
		})
	}
}

// cpuRate starts the CPU clock; the function it returns reports cpu-ns/op
// and cpu-MB/s.
func cpuRate(b *testing.B, size int) func() {
	start := signertest.StartCPU()
	return func() {
		start.Report(b)
		if cpu := signertest.CPUSince(start); cpu > 0 {
			b.ReportMetric(float64(size)*float64(b.N)/cpu.Seconds()/1e6, "cpu-MB/s")
		}
	}
}

// BenchmarkSign is Sign with an Ed25519 key (the field assembled, hashed,
// signed and folded) beside the bare ed25519.Sign it makes: the difference
// is what the field costs around the signature.
func BenchmarkSign(b *testing.B) {
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	msg := signertest.Message("b.example", 2<<10)
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	var h dkim.Header
	if err := h.Parse(msg[:i+4]); err != nil {
		b.Fatal(err)
	}
	list, data := h.Select(nil, nil)
	bh := dkim.NewBodyHash()
	bh.Write(msg[i+4:])
	sum := bh.Sum(nil)
	sig := &dkim.Signature{Domain: "b.example", Selector: "selector1-ed25519", Key: ek, Time: time.Unix(1_800_000_000, 0), Headers: list}
	b.Run("field", func(b *testing.B) {
		b.ReportAllocs()
		cpu := signertest.StartCPU()
		for b.Loop() {
			if _, err := dkim.Sign(data, sum, sig); err != nil {
				b.Fatal(err)
			}
		}
		cpu.Report(b)
	})
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		cpu := signertest.StartCPU()
		for b.Loop() {
			ed25519.Sign(ek, sum)
		}
		cpu.Report(b)
	})
}
