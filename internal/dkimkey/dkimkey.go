// Package dkimkey holds all key cryptography of dkimd in one small place:
// generating keys, (un)marshalling private keys, and turning a public key into
// the DKIM TXT text that DNS publishes. It knows nothing of storage or DNS
// transport; callers seal what Marshal returns before it touches a disk.
package dkimkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Algorithm names as they appear in the k= tag of a DKIM key record.
const (
	RSA     = "rsa"
	Ed25519 = "ed25519"
)

// DefaultRSABits is the key size of a domain's keys unless a brand asks for more.
const DefaultRSABits = 2048

// ErrKeySize rejects RSA sizes that DKIM verifiers distrust (1024) or that we do not offer.
var ErrKeySize = errors.New("dkimkey: RSA key size must be 2048, 3072 or 4096")

// ValidRSABits reports whether bits is a key size dkimd generates.
func ValidRSABits(bits int) bool {
	return bits == 2048 || bits == 3072 || bits == 4096
}

// Generate creates a private key for alg; bits is ignored for Ed25519.
func Generate(alg string, bits int) (crypto.Signer, error) {
	switch alg {
	case RSA:
		if !ValidRSABits(bits) {
			return nil, ErrKeySize
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: generate rsa: %w", err)
		}
		k.Precompute()
		return k, nil
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: generate ed25519: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("dkimkey: unknown algorithm %q", alg)
	}
}

// MarshalPrivate encodes a private key as PKCS#8 DER.
func MarshalPrivate(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: marshal pkcs8: %w", err)
	}
	return der, nil
}

// ParsePrivate decodes a PKCS#8 (or, for imported RSA keys, PKCS#1) DER private
// key. RSA keys come back precomputed, since every signature uses the CRT values.
func ParsePrivate(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		rk, err1 := x509.ParsePKCS1PrivateKey(der)
		if err1 != nil {
			return nil, fmt.Errorf("dkimkey: parse private key: %w", err)
		}
		k = rk
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, ErrKeySize
		}
		k.Precompute()
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("dkimkey: unsupported private key type %T", k)
	}
}

// Algorithm names the DKIM k= value of a key.
func Algorithm(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return RSA, nil
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return "", fmt.Errorf("dkimkey: unsupported public key type %T", pub)
}

// PublicBytes returns the bytes a DKIM key record carries in p=: the DER
// SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1) and the raw 32-byte key for
// Ed25519 (RFC 8463 §4.2).
func PublicBytes(pub crypto.PublicKey) ([]byte, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: marshal spki: %w", err)
		}
		return der, nil
	case ed25519.PublicKey:
		return append([]byte(nil), pub...), nil
	}
	return nil, fmt.Errorf("dkimkey: unsupported public key type %T", pub)
}

// ParsePublic is the inverse of PublicBytes.
func ParsePublic(alg string, p []byte) (crypto.PublicKey, error) {
	switch alg {
	case RSA:
		k, err := x509.ParsePKIXPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: parse spki: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("dkimkey: spki holds %T, not rsa", k)
		}
		return rk, nil
	case Ed25519:
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("dkimkey: ed25519 public key is %d bytes, want %d", len(p), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(append([]byte(nil), p...)), nil
	}
	return nil, fmt.Errorf("dkimkey: unknown algorithm %q", alg)
}

// TXTValue renders a DKIM key record. An empty p renders a revoked key
// ("p="), as RFC 6376 §3.6.1 prescribes.
func TXTValue(alg string, p []byte) string {
	return string(AppendTXTValue(nil, alg, p))
}

// AppendTXTValue is the one place that renders a DKIM key record: it
// appends TXTValue(alg, p) to dst, for callers that reuse a buffer.
func AppendTXTValue(dst []byte, alg string, p []byte) []byte {
	dst = append(dst, "v=DKIM1; k="...)
	dst = append(dst, alg...)
	dst = append(dst, "; p="...)
	return base64.StdEncoding.AppendEncode(dst, p)
}

// ParseTXTValue extracts k= and p= from a DKIM key record, joined from its
// character-strings. It is lenient about spacing, as verifiers are.
func ParseTXTValue(txt string) (alg string, p []byte, err error) {
	alg = RSA // RFC 6376 §3.6.1: k= defaults to rsa
	found := false
	for _, tag := range strings.Split(txt, ";") {
		name, value, ok := strings.Cut(tag, "=")
		if !ok {
			continue
		}
		value = strings.Join(strings.Fields(value), "")
		switch strings.TrimSpace(name) {
		case "k":
			alg = value
		case "p":
			found = true
			p, err = base64.StdEncoding.DecodeString(value)
			if err != nil {
				return "", nil, fmt.Errorf("dkimkey: p= is not base64: %w", err)
			}
		}
	}
	if !found {
		return "", nil, errors.New("dkimkey: no p= tag")
	}
	return alg, p, nil
}

// Fingerprint is the hex SHA-256 of the published public key bytes.
func Fingerprint(p []byte) string {
	sum := sha256.Sum256(p)
	return hex.EncodeToString(sum[:])
}

// SplitTXT cuts a TXT value into character-strings of at most 255 octets
// (RFC 1035 §3.3), since a 2048-bit key's record is longer than one string.
func SplitTXT(s string) []string {
	parts := make([]string, 0, len(s)/255+1)
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}
