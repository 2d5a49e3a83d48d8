package dkimkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"strings"
	"testing"
)

func TestTXTValueDecodesBackToKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		alg  string
		bits int
	}{
		{"rsa-2048", RSA, 2048},
		{"ed25519", Ed25519, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Generate(tc.alg, tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			p, err := PublicBytes(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			txt := TXTValue(tc.alg, p)
			if !strings.HasPrefix(txt, "v=DKIM1; k="+tc.alg+"; p=") {
				t.Fatalf("TXT value %q lacks the DKIM1 prefix", txt)
			}
			alg, back, err := ParseTXTValue(strings.Join(SplitTXT(txt), ""))
			if err != nil {
				t.Fatal(err)
			}
			if alg != tc.alg || !bytes.Equal(back, p) {
				t.Fatalf("round trip: alg %q, key equal %v", alg, bytes.Equal(back, p))
			}
			pub, err := ParsePublic(alg, back)
			if err != nil {
				t.Fatal(err)
			}
			switch want := k.Public().(type) {
			case *rsa.PublicKey:
				if !want.Equal(pub) {
					t.Fatal("parsed RSA key differs from generated key")
				}
			case ed25519.PublicKey:
				if !want.Equal(pub) {
					t.Fatal("parsed Ed25519 key differs from generated key")
				}
			}
			der, err := MarshalPrivate(k)
			if err != nil {
				t.Fatal(err)
			}
			k2, err := ParsePrivate(der)
			if err != nil {
				t.Fatal(err)
			}
			p2, _ := PublicBytes(k2.Public())
			if !bytes.Equal(p, p2) {
				t.Fatal("private key round trip changed the public key")
			}
		})
	}
}

func TestGenerateRefusesWeakRSA(t *testing.T) {
	if _, err := Generate(RSA, 1024); err != ErrKeySize {
		t.Fatalf("Generate(rsa, 1024) = %v, want ErrKeySize", err)
	}
}

func TestSplitTXT(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 510, 511, 800} {
		s := strings.Repeat("x", n)
		parts := SplitTXT(s)
		if strings.Join(parts, "") != s {
			t.Fatalf("len %d: parts do not join back", n)
		}
		for _, p := range parts {
			if len(p) > 255 {
				t.Fatalf("len %d: part of %d octets", n, len(p))
			}
		}
	}
}

func TestRevokedTXTValue(t *testing.T) {
	if got := TXTValue(RSA, nil); got != "v=DKIM1; k=rsa; p=" {
		t.Fatalf("revoked record = %q", got)
	}
}
