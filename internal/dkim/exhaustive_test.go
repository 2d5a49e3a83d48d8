package dkim_test

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// TestBodyHashExhaustive: every body of up to six bytes drawn from a plain
// byte, the two white-space bytes, CR and LF, split at every point, hashes
// as the reference canonicalization does.
func TestBodyHashExhaustive(t *testing.T) {
	alpha := []byte("a \t\r\n")
	var rec func(prefix []byte, n int)
	rec = func(prefix []byte, n int) {
		if n == 0 {
			want := sha256.Sum256(refBody(prefix))
			for at := 0; at <= len(prefix); at++ {
				if got := bodyHash(prefix[:at], prefix[at:]); !bytes.Equal(got, want[:]) {
					t.Fatalf("%q split %d: got %x want %x (%q)", prefix, at, got, want, refBody(prefix))
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
