package dkimkey

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzTXTRoundTrip checks that any p= bytes survive rendering, splitting
// into character-strings and parsing back.
func FuzzTXTRoundTrip(f *testing.F) {
	f.Add([]byte{}, true)
	f.Add(bytes.Repeat([]byte{0xff}, 600), false)
	f.Fuzz(func(t *testing.T, p []byte, rsa bool) {
		alg := Ed25519
		if rsa {
			alg = RSA
		}
		parts := SplitTXT(TXTValue(alg, p))
		for _, s := range parts {
			if len(s) > 255 {
				t.Fatalf("character-string of %d octets", len(s))
			}
		}
		gotAlg, got, err := ParseTXTValue(strings.Join(parts, ""))
		if err != nil || gotAlg != alg || !bytes.Equal(got, p) {
			t.Fatalf("round trip: %q %x %v", gotAlg, got, err)
		}
	})
}

// FuzzParseTXTValue feeds arbitrary records, as a customer's DNS might
// answer: never a panic.
func FuzzParseTXTValue(f *testing.F) {
	f.Add("v=DKIM1; k=rsa; p=MIIB")
	f.Add("p=;;;=k")
	f.Fuzz(func(t *testing.T, txt string) {
		_, _, _ = ParseTXTValue(txt)
	})
}

// FuzzParsePrivate feeds arbitrary DER: never a panic, never a weak key.
func FuzzParsePrivate(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		_, _ = ParsePrivate(der)
	})
}
