package rsasign_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"dkimd/internal/rsasign"
)

// testKeys are the keys in testdata, made with `openssl genpkey -algorithm
// RSA -pkeyopt rsa_keygen_bits:N` (five of 2048 bits, one each of 1024,
// 3072 and 4096): parsing them is quicker than generating keys per run.
var testKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	files, err := filepath.Glob("testdata/rsa*.pem")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no test keys: %v", err)
	}
	var keys []*rsa.PrivateKey
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM block", f)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, k.(*rsa.PrivateKey))
	}
	return keys, nil
})

func keys(t testing.TB) []*rsa.PrivateKey {
	t.Helper()
	k, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// key2048 is the i-th 2048-bit test key, the size dkimd makes.
func key2048(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	for _, k := range keys(t) {
		if k.N.BitLen() == 2048 {
			if i == 0 {
				return k
			}
			i--
		}
	}
	t.Fatal("not enough 2048-bit test keys")
	return nil
}

// openssl returns the OpenSSL backend, or skips where libcrypto cannot be
// used (TestAvailable fails instead where it should be).
func openssl(t testing.TB) rsasign.Backend {
	t.Helper()
	b, unavailable, err := rsasign.Select(rsasign.OpenSSL)
	if err != nil {
		t.Skipf("no libcrypto here: %v", unavailable)
	}
	return b
}

// signVerified signs digest with s and checks the signature with
// crypto/rsa, as every signature the OpenSSL backend makes in a test is.
func signVerified(t testing.TB, s crypto.Signer, pub *rsa.PublicKey, digest []byte) []byte {
	t.Helper()
	sig, err := s.Sign(nil, digest, crypto.SHA256)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig); err != nil {
		t.Fatalf("crypto/rsa does not verify the signature: %v", err)
	}
	return sig
}

func TestAvailable(t *testing.T) {
	lib := "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
	if _, err := os.Stat(lib); err != nil || !cgoBuild {
		t.Skipf("no %s or no cgo in this test binary: the Go backend serves", lib)
	}
	if err := rsasign.Available(); err != nil {
		t.Fatalf("%s is installed but cannot be used: %v", lib, err)
	}
}

func TestSelect(t *testing.T) {
	libErr := rsasign.Available()
	for _, tc := range []struct {
		choice, want string
		wantErr      bool
	}{
		{"go", "go", false},
		{"auto", map[bool]string{true: "openssl", false: "go"}[libErr == nil], false},
		{"openssl", "openssl", libErr != nil},
		{"boringssl", "", true},
		{"", "", true},
	} {
		t.Run(tc.choice, func(t *testing.T) {
			b, unavailable, err := rsasign.Select(tc.choice)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "--rsa-backend") {
					t.Fatalf("Select(%q) = %v, want an error naming --rsa-backend", tc.choice, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Select(%q): %v", tc.choice, err)
			}
			if b.Name() != tc.want {
				t.Fatalf("Select(%q) chose %s, want %s", tc.choice, b.Name(), tc.want)
			}
			if tc.choice == "auto" && (unavailable == nil) != (libErr == nil) {
				t.Fatalf("auto says libcrypto is unavailable because %v; Available says %v", unavailable, libErr)
			}
		})
	}
}

// TestDifferential signs many messages with every test key through both
// backends: PKCS#1 v1.5 is deterministic, so the signatures must be the
// same bytes.
func TestDifferential(t *testing.T) {
	ossl := openssl(t)
	for _, k := range keys(t) {
		t.Run(fmt.Sprintf("%d-bit-%x", k.N.BitLen(), k.N.Bytes()[:4]), func(t *testing.T) {
			s, err := ossl.Signer(k)
			if err != nil {
				t.Fatal(err)
			}
			defer s.(*rsasign.Key).Close()
			if pub, ok := s.Public().(*rsa.PublicKey); !ok || !pub.Equal(&k.PublicKey) {
				t.Fatalf("Public() = %T, not the key's *rsa.PublicKey", s.Public())
			}
			msgs := [][]byte{nil, {0}, bytes.Repeat([]byte{0xff}, 64)}
			for i := range 22 {
				msgs = append(msgs, []byte(strings.Repeat(fmt.Sprintf("message %d\r\n", i), i*7+1)))
			}
			for i, m := range msgs {
				d := sha256.Sum256(m)
				want, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
				if err != nil {
					t.Fatal(err)
				}
				if got := signVerified(t, s, &k.PublicKey, d[:]); !bytes.Equal(got, want) {
					t.Fatalf("message %d: libcrypto's signature differs from crypto/rsa's", i)
				}
			}
		})
	}
}

// TestConcurrent signs with one key from many goroutines, sharing its
// contexts' pool; with -race it also checks the Go side's locking.
func TestConcurrent(t *testing.T) {
	ossl := openssl(t)
	k := key2048(t, 0)
	s, err := ossl.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	defer s.(*rsasign.Key).Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 12 {
				d := sha256.Sum256(fmt.Appendf(nil, "goroutine %d message %d", g, i))
				want, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
				got, err := s.Sign(nil, d[:], crypto.SHA256)
				if err == nil {
					err = rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, d[:], got)
				}
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("goroutine %d message %d: signature differs from crypto/rsa's", g, i)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClose: a key closed while messages are still being signed with it
// (rotation retired it) keeps signing, through crypto/rsa.
func TestClose(t *testing.T) {
	ossl := openssl(t)
	k := key2048(t, 1)
	s, err := ossl.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	key := s.(*rsasign.Key)
	d := sha256.Sum256([]byte("before"))
	before := signVerified(t, key, &k.PublicKey, d[:])
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { signVerified(t, key, &k.PublicKey, d[:]) })
	}
	if err := key.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if after := signVerified(t, key, &k.PublicKey, d[:]); !bytes.Equal(before, after) {
		t.Fatal("the signature after Close differs")
	}
	if err := key.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestOtherOptions: what is not PKCS#1 v1.5 over SHA-256 is crypto/rsa's.
func TestOtherOptions(t *testing.T) {
	ossl := openssl(t)
	k := key2048(t, 2)
	s, err := ossl.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	defer s.(*rsasign.Key).Close()
	d1 := sha1.Sum([]byte("sha1"))
	sig, err := s.Sign(nil, d1[:], crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA1, d1[:], sig); err != nil {
		t.Fatalf("rsa-sha1: %v", err)
	}
	d := sha256.Sum256([]byte("pss"))
	sig, err = s.Sign(rand.Reader, d[:], &rsa.PSSOptions{Hash: crypto.SHA256})
	if err == nil {
		err = rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, d[:], sig, nil)
	}
	if err != nil {
		t.Fatalf("PSS: %v", err)
	}
	if _, err := s.Sign(nil, d[:16], crypto.SHA256); err == nil {
		t.Fatal("a 16-byte SHA-256 digest was signed")
	}
}

func TestGoBackend(t *testing.T) {
	k := key2048(t, 0)
	s, err := rsasign.Backend{}.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	if s != crypto.Signer(k) {
		t.Fatalf("the Go backend returned %T, not the key itself", s)
	}
	d := sha256.Sum256([]byte("go"))
	signVerified(t, s, &k.PublicKey, d[:])
}
