package sealbox

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// DeriveKey returns a 32-byte key for one purpose, derived from the current
// KEK with HKDF-SHA256 (RFC 5869) and purpose as the info string. Every
// replica that loads the same KEK file derives the same key, so a secret
// that replicas must share (the console's session MAC key) needs no second
// file to distribute; a distinct purpose gives an independent key, and the
// KEK itself is never used for anything but sealing.
func (b *Box) DeriveKey(purpose string) ([]byte, error) {
	if purpose == "" {
		return nil, fmt.Errorf("sealbox: derive key: empty purpose")
	}
	k, err := hkdf.Key(sha256.New, b.derive, nil, purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("sealbox: derive key: %w", err)
	}
	return k, nil
}
