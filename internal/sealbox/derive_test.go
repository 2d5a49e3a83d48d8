package sealbox

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestDeriveKey(t *testing.T) {
	// KEK 00 01 … 1f; the expected key is HKDF-SHA256 (RFC 5869, empty salt,
	// info "test purpose") as Python's hmac module computes it.
	box, err := ParseKeyFile([]byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := box.DeriveKey("test purpose")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(k), "ec97367c00d14fd89a20046c66ea0c891255d9722f0a0851973fc6ab2f4094f7"; got != want {
		t.Errorf("derived %s, want %s", got, want)
	}
	other, err := box.DeriveKey("another purpose")
	if err != nil || bytes.Equal(other, k) {
		t.Errorf("another purpose gives the same key (%v)", err)
	}
	// A rotated KEK file (new key first, old one kept for opening) derives
	// from the new key: the current KEK is what replicas agree on.
	rotated, err := ParseKeyFile([]byte("new QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	if err != nil {
		t.Fatal(err)
	}
	if k2, err := rotated.DeriveKey("test purpose"); err != nil || bytes.Equal(k2, k) {
		t.Errorf("rotated KEK derives the old key (%v)", err)
	}
	if _, err := box.DeriveKey(""); err == nil {
		t.Error("empty purpose accepted")
	}
}
