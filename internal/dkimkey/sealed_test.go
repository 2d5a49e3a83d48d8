package dkimkey_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"dkimd/internal/dkimkey"
	"dkimd/internal/sealbox"
)

func TestSealOpenRoundTrip(t *testing.T) {
	box, err := sealbox.New("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := dkimkey.Generate(dkimkey.Ed25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	ad := sealbox.AssociatedData("domain", "example.com", "selector1-ed25519")
	kekID, sealed, err := dkimkey.Seal(box, priv, ad)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dkimkey.Open(box, kekID, sealed, ad)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public().(ed25519.PublicKey).Equal(priv.Public()) {
		t.Error("opened key differs from the sealed one")
	}
	// Bound to its slot: another slot's associated data does not open it.
	if _, err := dkimkey.Open(box, kekID, sealed, sealbox.AssociatedData("domain", "example.com", "selector2-ed25519")); err == nil {
		t.Error("opened with another slot's associated data")
	}
	if _, err := dkimkey.Open(box, kekID, nil, ad); !errors.Is(err, dkimkey.ErrDestroyed) {
		t.Errorf("destroyed key: %v, want ErrDestroyed", err)
	}
}
