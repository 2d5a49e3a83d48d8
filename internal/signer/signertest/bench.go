package signertest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"fmt"
	"syscall"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// Message builds a message of about size bytes from domain, shaped like the
// one bench/sign sends: a Received trace, the signed header fields, a text
// body of 70-byte lines.
func Message(domain string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.%s with ESMTPSA id 4A1B2C\r\n", domain)
	fmt.Fprintf(&b, "From: Alice Example <alice@%s>\r\nTo: Bob <bob@example.net>\r\nSubject: benchmark message\r\n", domain)
	fmt.Fprintf(&b, "Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: <bench.1@%s>\r\nMIME-Version: 1.0\r\n", domain)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <https://example.net/u/1>\r\n")
	b.WriteString("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n")
	line := "The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// ActiveRSAKey returns the parsed private key of the domain's active RSA
// key, for benchmarks that put the bare crypto next to a signing path.
func (f *Fixture) ActiveRSAKey(t testing.TB, domain string) *rsa.PrivateKey {
	t.Helper()
	keys, err := f.Store.Keys(context.Background(), keystore.OwnerDomain, domain)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.State != keystore.StateActive || k.Algorithm != dkimkey.RSA {
			continue
		}
		priv, err := dkimkey.Open(f.Svc.Box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
		if err != nil {
			t.Fatal(err)
		}
		rk := priv.(*rsa.PrivateKey)
		rk.Precompute()
		return rk
	}
	t.Fatalf("%s has no active RSA key", domain)
	return nil
}

// CPUClock measures the CPU time of the whole process (garbage collection
// and every goroutine included) across a benchmark loop. On a shared machine,
// where ns/op moves with other people's load, cpu-ns/op is the steadier
// figure to compare.
type CPUClock time.Duration

// StartCPU starts a CPUClock.
func StartCPU() CPUClock { return CPUClock(processCPU()) }

// Report adds cpu-ns/op to the benchmark's results.
func (c CPUClock) Report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-time.Duration(c))/float64(b.N), "cpu-ns/op")
}

// CPUSince is the process's CPU time since c started.
func CPUSince(c CPUClock) time.Duration { return processCPU() - time.Duration(c) }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
