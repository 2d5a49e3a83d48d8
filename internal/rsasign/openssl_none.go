//go:build !cgo || !linux

package rsasign

import (
	"crypto/rsa"
	"errors"
)

// Without cgo there is no way to call libcrypto: --rsa-backend auto signs
// with Go and openssl refuses to start.
var errNoCgo = errors.New("rsasign: libcrypto unavailable: this dkimd was built without cgo (CGO_ENABLED=0) or not for Linux")

// Available says why libcrypto cannot be used.
func Available() error { return errNoCgo }

type handle struct{}

func newHandle(*rsa.PrivateKey) (*handle, error) { return nil, errNoCgo }

func (*handle) sign([]byte, int) ([]byte, bool, error) { return nil, false, nil }

func (*handle) free() {}
