package dkim_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"dkimd/internal/dkim"
)

// TestBodyHashExhaustive: every body of up to six bytes drawn from a plain
// byte, the two white-space bytes, CR and LF, split at every point, hashes
// as the reference canonicalization does and finds its first bare CR.
func TestBodyHashExhaustive(t *testing.T) {
	alpha := []byte("a \t\r\n")
	var rec func(prefix []byte, n int)
	rec = func(prefix []byte, n int) {
		if n == 0 {
			want := sha256.Sum256(refBody(prefix))
			wantLine := 0
			if m := bareCR.FindIndex(prefix); m != nil {
				wantLine = bytes.Count(prefix[:m[0]], []byte("\n")) + 1
			}
			for at := 0; at <= len(prefix); at++ {
				b := dkim.NewBodyHash()
				b.Write(prefix[:at])
				b.Write(prefix[at:])
				if got := b.Sum(nil); !bytes.Equal(got, want[:]) {
					t.Fatalf("%q split %d: got %x want %x (%q)", prefix, at, got, want, refBody(prefix))
				}
				if got := b.BareCR(); got != wantLine {
					t.Fatalf("%q split %d: bare CR on line %d, want %d", prefix, at, got, wantLine)
				}
			}
			return
		}
		for _, c := range alpha {
			rec(append(prefix, c), n-1)
		}
	}
	for n := 0; n <= 6; n++ {
		rec(nil, n)
	}
}
