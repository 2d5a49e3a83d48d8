package dkimkey

import (
	"crypto"
	"errors"

	"dkimd/internal/sealbox"
)

// ErrDestroyed is the opening of a key whose private half was destroyed
// (a retired or deleted slot).
var ErrDestroyed = errors.New("dkimkey: the private key has been destroyed")

// Seal marshals priv and seals it under box's current KEK, bound to ad
// (sealbox.AssociatedData of the key's slot), so that the clear DER never
// outlives this call.
func Seal(box *sealbox.Box, priv crypto.Signer, ad []byte) (kekID string, sealed []byte, err error) {
	der, err := MarshalPrivate(priv)
	if err != nil {
		return "", nil, err
	}
	defer clear(der)
	return box.Seal(der, ad)
}

// Open unseals a stored private key, sealed under the KEK kekID and bound
// to ad, and parses it. Opening is key cryptography, so it lives here and
// not with whoever provisions keys: the signer opens keys and provisions
// none.
func Open(box *sealbox.Box, kekID string, sealed, ad []byte) (crypto.Signer, error) {
	if len(sealed) == 0 {
		return nil, ErrDestroyed
	}
	der, err := box.Open(kekID, sealed, ad)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return ParsePrivate(der)
}
