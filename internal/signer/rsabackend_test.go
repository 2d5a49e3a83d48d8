package signer_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rsasign"
	"dkimd/internal/sealbox"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// opensslBackend is rsasign's OpenSSL backend, or a skip where this test
// binary cannot load libcrypto (rsasign's TestAvailable fails where it
// should).
func opensslBackend(t *testing.T) rsasign.Backend {
	t.Helper()
	b, unavailable, err := rsasign.Select(rsasign.OpenSSL)
	if err != nil {
		t.Skipf("no libcrypto: %v", unavailable)
	}
	return b
}

// TestOpenSSLBackend runs the RSA backend's cases on one fixture (making
// one costs seconds of key generation): the rotation case changes it, so
// it comes last.
func TestOpenSSLBackend(t *testing.T) {
	t.Parallel()
	b := opensslBackend(t)
	f := signertest.New(t)
	t.Run("signs as Go", func(t *testing.T) { signsAsGo(t, b, f) })
	t.Run("rotated key is closed", func(t *testing.T) { rotatedKeyIsClosed(t, b, f) })
}

// signsAsGo signs the same messages at the same t= with libcrypto and with
// crypto/rsa: PKCS#1 v1.5 is deterministic, so the fields must be the same
// bytes, and they verify through DNS.
func signsAsGo(t *testing.T, b rsasign.Backend, f *signertest.Fixture) {
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	clock := func() time.Time { return now }
	goSigner, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sslSigner, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Now: clock, RSA: b.Signer})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, from := range []string{signertest.AlignedRSA, signertest.AlignedEd, signertest.FallbackRSA, signertest.FallbackEd} {
		t.Run(from, func(t *testing.T) {
			msg := message(from, "Hello,\r\n\r\nsigned by libcrypto.\r\n")
			want, err := goSigner.Sign(ctx, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			got, err := sslSigner.Sign(ctx, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if got.Header() != want.Header() {
				t.Fatalf("libcrypto's fields differ from crypto/rsa's:\n%s\n%s", got.Header(), want.Header())
			}
			vs := signertest.VerifyGo(t, f.DNS, []byte(got.Header()+msg))
			if len(vs) != len(got.Signatures) {
				t.Fatalf("go-msgauth saw %d signatures, want %d", len(vs), len(got.Signatures))
			}
			for _, v := range vs {
				if v.Err != nil {
					t.Errorf("go-msgauth: d=%s: %v", v.Domain, v.Err)
				}
			}
		})
	}
}

// closeRecorder is the OpenSSL (or Go) signer of one key, noting Close.
type closeRecorder struct {
	crypto.Signer
	mu     *sync.Mutex
	closed map[string]int // by the key's modulus prefix
}

func (c *closeRecorder) Close() error {
	c.mu.Lock()
	c.closed[c.id()]++
	c.mu.Unlock()
	if cl, ok := c.Signer.(interface{ Close() error }); ok {
		return cl.Close()
	}
	return nil
}

func (c *closeRecorder) id() string { return c.Public().(*rsa.PublicKey).N.String()[:20] }

// rotatedKeyIsClosed: when rotation retires a key, the cache drops it and
// closes what the RSA backend made for it (freeing the EVP_PKEY), once; the
// successor stays open and signs.
func rotatedKeyIsClosed(t *testing.T, b rsasign.Backend, f *signertest.Fixture) {
	var mu sync.Mutex
	closed := map[string]int{}
	made := map[string]int{}
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
		RSA: func(k *rsa.PrivateKey) (crypto.Signer, error) {
			ks, err := b.Signer(k)
			if err != nil {
				return nil, err
			}
			r := &closeRecorder{Signer: ks, mu: &mu, closed: closed}
			mu.Lock()
			made[r.id()]++
			mu.Unlock()
			return r, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.Store.Watch(t.Context(), s.Invalidate)
	ctx := context.Background()
	msg := message(signertest.AlignedRSA, "x\r\n")
	sign := func() string {
		t.Helper()
		res, err := s.Sign(ctx, strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range signertest.VerifyGo(t, f.DNS, []byte(res.Header()+msg)) {
			if v.Err != nil {
				t.Fatalf("verify: %v", v.Err)
			}
		}
		return res.Selectors()[0]
	}
	if sel := sign(); sel != provision.Selector1 {
		t.Fatalf("signed with %s before rotation", sel)
	}
	old := keyOf(t, f, provision.Selector1)
	rotateAlignedRSA(t, f)
	// The store's Watch invalidates asynchronously: sign until the new key
	// signs (bounded, so a signer that never notices fails).
	for deadline := time.Now().Add(5 * time.Second); sign() != provision.Selector2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still signing with selector1 after rotation")
		}
	}
	sign()
	mu.Lock()
	defer mu.Unlock()
	if closed[old] != 1 || made[old] != 1 {
		t.Errorf("the retired key was made %d and closed %d times, want once each", made[old], closed[old])
	}
	for id, n := range closed {
		if id != old {
			t.Errorf("key %s… closed %d times, still active", id, n)
		}
	}
}

// keyOf is the id closeRecorder gives AlignedRSA's key in selector.
func keyOf(t *testing.T, f *signertest.Fixture, selector string) string {
	t.Helper()
	keys, err := f.Store.Keys(context.Background(), keystore.OwnerDomain, signertest.AlignedRSA)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Selector == selector {
			priv, err := dkimkey.Open(f.Svc.Box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
			if err != nil {
				t.Fatal(err)
			}
			return priv.(*rsa.PrivateKey).N.String()[:20]
		}
	}
	t.Fatalf("no key in %s", selector)
	return ""
}
