package rsasign

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
)

// Key is an RSA private key held inside libcrypto as an EVP_PKEY, parsed
// once when the key is loaded. Sign is safe for concurrent use. After
// Close, or for what libcrypto is not asked to do (a hash other than
// SHA-256, PSS), it signs with crypto/rsa: a signature is never refused
// because the key was retired while a message was in flight.
type Key struct {
	priv *rsa.PrivateKey
	h    *handle
}

// NewKey hands k to libcrypto. The first signature is checked with
// crypto/rsa.VerifyPKCS1v15, so that a libcrypto that signs wrongly
// (docs/decisions.md, "what is trusted") fails when a key loads, not in a
// receiver's verifier.
func NewKey(k *rsa.PrivateKey) (*Key, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	k.Precompute()
	h, err := newHandle(k)
	if err != nil {
		return nil, err
	}
	key := &Key{priv: k, h: h}
	// A key the signer forgets without Close is freed by the collector.
	runtime.AddCleanup(key, (*handle).free, h)
	probe := sha256.Sum256([]byte("dkimd rsasign self-check"))
	sig, err := key.Sign(nil, probe[:], crypto.SHA256)
	if err == nil {
		err = rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, probe[:], sig)
	}
	if err != nil {
		key.Close()
		return nil, fmt.Errorf("rsasign: libcrypto self-check: %w", err)
	}
	return key, nil
}

// Public is the key's *rsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return &k.priv.PublicKey }

// Sign makes an RSASSA-PKCS1-v1_5 signature (RFC 8017, section 8.2) of a
// SHA-256 digest through libcrypto; rand is not used, PKCS#1 v1.5 needs no
// randomness (OpenSSL blinds with its own).
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss || opts.HashFunc() != crypto.SHA256 {
		return k.priv.Sign(rand, digest, opts)
	}
	if len(digest) != sha256.Size {
		return nil, errors.New("rsasign: the digest is not SHA-256 sized")
	}
	sig, ok, err := k.h.sign(digest, k.priv.Size())
	if !ok {
		return k.priv.Sign(rand, digest, opts)
	}
	return sig, err
}

// Close frees the key inside libcrypto; it may be called while other
// goroutines sign (they finish first) and more than once.
func (k *Key) Close() error {
	k.h.free()
	return nil
}
