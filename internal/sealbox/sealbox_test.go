package sealbox

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateMakesPrivateFileAndReloadsIt(t *testing.T) {
	dir := t.TempDir()
	box, path, created, err := LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	kid, sealed, err := box.Seal([]byte("secret"), AssociatedData("domain", "example.com", "selector1"))
	if err != nil {
		t.Fatal(err)
	}
	again, _, created, err := LoadOrCreate(dir)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	pt, err := again.Open(kid, sealed, AssociatedData("domain", "example.com", "selector1"))
	if err != nil || string(pt) != "secret" {
		t.Fatalf("open after reload: %q, %v", pt, err)
	}
}

func TestOpenRefusesOtherRowAndTampering(t *testing.T) {
	box, _, _, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ad := AssociatedData("domain", "example.com", "selector1")
	kid, sealed, err := box.Seal([]byte("secret"), ad)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		kid    string
		sealed []byte
		ad     []byte
	}{
		{"other selector", kid, sealed, AssociatedData("domain", "example.com", "selector2")},
		{"other domain", kid, sealed, AssociatedData("domain", "example.org", "selector1")},
		{"flipped bit", kid, append(append([]byte(nil), sealed[:len(sealed)-1]...), sealed[len(sealed)-1]^1), ad},
		{"short", kid, sealed[:4], ad},
		{"unknown kek", "nope", sealed, ad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := box.Open(tc.kid, tc.sealed, tc.ad); err == nil {
				t.Fatal("Open succeeded")
			}
		})
	}
}

func TestKeyFileRotation(t *testing.T) {
	oldKey := bytes.Repeat([]byte{1}, 32)
	newKey := bytes.Repeat([]byte{2}, 32)
	oldBox, err := ParseKeyFile([]byte("old " + base64.StdEncoding.EncodeToString(oldKey) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	kid, sealed, err := oldBox.Seal([]byte("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	both, err := ParseKeyFile([]byte("# rotated\nnew " + base64.StdEncoding.EncodeToString(newKey) +
		"\nold " + base64.StdEncoding.EncodeToString(oldKey) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if both.CurrentID() != "new" {
		t.Fatalf("current = %q, want new", both.CurrentID())
	}
	if pt, err := both.Open(kid, sealed, nil); err != nil || string(pt) != "k" {
		t.Fatalf("old ciphertext under rotated file: %q %v", pt, err)
	}
}

func TestLoadFileRefusesLooseMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(path); err == nil {
		t.Fatal("LoadFile accepted a world-readable key file")
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":     "",
		"short key": base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"garbage":   "not base64 at all!",
		"too many":  "a b c",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseKeyFile([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := New("x", nil); err == nil || errors.Is(err, ErrUnknownKEK) {
		t.Fatalf("New without keys: %v", err)
	}
}
