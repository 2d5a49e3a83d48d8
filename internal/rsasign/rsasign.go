// Package rsasign turns RSA private keys into crypto.Signers, either Go's
// own crypto/rsa or the system's OpenSSL 3 libcrypto (libcrypto.so.3,
// loaded at run time with dlopen, so that a binary built with cgo still
// starts, and signs with Go, where the library is missing).
//
// It owns the choice of backend (--rsa-backend, docs/decisions.md) and the
// life of a key inside libcrypto; it does not parse, store or pick keys:
// the signer hands it a parsed *rsa.PrivateKey once per key and keeps what
// it gets back for as long as the key signs.
package rsasign

import (
	"crypto"
	"crypto/rsa"
	"fmt"
)

// The values of --rsa-backend.
const (
	Auto    = "auto"    // OpenSSL when libcrypto loads, else Go
	OpenSSL = "openssl" // the system's libcrypto, or a start-up error
	Go      = "go"      // crypto/rsa
)

// Backend makes signers for RSA keys. The zero value is the Go backend.
type Backend struct {
	openssl bool
}

// Name is the backend in use, "openssl" or "go": what the log line at
// start and the metric label say.
func (b Backend) Name() string {
	if b.openssl {
		return OpenSSL
	}
	return Go
}

// Signer returns a crypto.Signer for k. For the OpenSSL backend it is a
// *Key holding k inside libcrypto until Close (or until it is garbage);
// for Go it is k itself, precomputed.
func (b Backend) Signer(k *rsa.PrivateKey) (crypto.Signer, error) {
	if !b.openssl {
		k.Precompute()
		return k, nil
	}
	return NewKey(k)
}

// Select resolves a --rsa-backend value. "openssl" when libcrypto cannot
// be loaded (no cgo in this binary, no libcrypto.so.3 on this machine) is
// an error naming the flag; "auto" then falls back to Go and unavailable
// says why, for the log line.
func Select(choice string) (b Backend, unavailable error, err error) {
	switch choice {
	case Go:
		return Backend{}, nil, nil
	case OpenSSL, Auto:
		if err := Available(); err != nil {
			if choice == OpenSSL {
				return Backend{}, err, fmt.Errorf("--rsa-backend openssl: %w", err)
			}
			return Backend{}, err, nil
		}
		return Backend{openssl: true}, nil, nil
	default:
		return Backend{}, nil, fmt.Errorf("--rsa-backend: %q is not auto, openssl or go", choice)
	}
}
