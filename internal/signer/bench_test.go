package signer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	dkimcore "dkimd/internal/dkim"
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

// BenchmarkGoMsgauth is go-msgauth alone, configured as dkimd signs
// (msgauthOptions), on the messages of BenchmarkSign: what the signer cost
// before it had its own core (docs/decisions.md). With the Ed25519 key the crypto is
// a few percent, so its MB/s is go-msgauth's reading, canonicalization and
// hashing speed.
func BenchmarkGoMsgauth(b *testing.B) {
	f := signertest.New(b)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	keys := []struct {
		name string
		key  crypto.Signer
	}{{"rsa", f.ActiveRSAKey(b, signertest.AlignedRSA)}, {"ed25519", ed}}
	for _, size := range []int{2 << 10, 100 << 10} {
		msg := signertest.Message(signertest.AlignedRSA, size)
		for _, k := range keys {
			b.Run(k.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				cpu := signertest.StartCPU()
				for b.Loop() {
					s, err := dkim.NewSigner(msgauthOptions(signertest.AlignedRSA, "selector1", k.key))
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
				cpu.Report(b)
			})
		}
	}
}

// msgauthOptions is go-msgauth configured as dkimd's core signs:
// relaxed/relaxed, SHA-256, every signed field listed twice.
func msgauthOptions(domain, selector string, key crypto.Signer) *dkim.SignOptions {
	var h []string
	for _, f := range dkimcore.SignedFields {
		h = append(h, f.Name, f.Name)
	}
	return &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             h,
	}
}

func sizeName(n int) string {
	if n >= 100<<10 {
		return "100KB"
	}
	return "2KB"
}

// BenchmarkBegin is what a message costs the signer before its body and
// its signatures: the header parsed, the From domain found, the keys
// chosen (cached), the signed fields selected and canonicalized. Each
// message is aborted, which leaves its state to the collector (only Close
// puts it back in the pool), so every iteration also allocates and grows
// a fresh one.
func BenchmarkBegin(b *testing.B) {
	f := signertest.New(b)
	s := newSigner(b, f, nil)
	msg := signertest.Message(signertest.AlignedRSA, 2<<10)
	header := msg[:bytes.Index(msg, []byte("\r\n\r\n"))+4]
	b.ReportAllocs()
	cpu := signertest.StartCPU()
	for b.Loop() {
		m, err := s.Begin(context.Background(), header)
		if err != nil {
			b.Fatal(err)
		}
		m.Abort()
	}
	cpu.Report(b)
}
