// Package sealbox encrypts private keys at rest: AES-256-GCM under a
// key-encryption key (KEK). Each ciphertext carries the id of the KEK that
// sealed it, so a new KEK can be introduced while old ciphertexts still open;
// the associated data binds a ciphertext to its owner and selector, so a
// ciphertext copied to another row does not open there.
//
// It owns the KEK file format and nothing else: it never logs key material.
package sealbox

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// KeyFileName is the KEK file that dkimd generates in its data dir when no
// KEK is configured.
const KeyFileName = "master.key"

// ErrUnknownKEK means a ciphertext was sealed under a KEK that is not loaded.
var ErrUnknownKEK = errors.New("sealbox: ciphertext sealed under a key-encryption key that is not loaded")

// Box seals with its current KEK and opens with any loaded KEK.
type Box struct {
	current string
	aeads   map[string]cipher.AEAD
	// derive is the current KEK itself, kept only for DeriveKey.
	derive []byte
}

// New builds a Box from KEKs by id; current names the one that seals.
func New(current string, keks map[string][]byte) (*Box, error) {
	b := &Box{current: current, aeads: make(map[string]cipher.AEAD, len(keks))}
	for id, k := range keks {
		if len(k) != 32 {
			return nil, fmt.Errorf("sealbox: key-encryption key %q is %d bytes, want 32", id, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("sealbox: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealbox: %w", err)
		}
		b.aeads[id] = aead
	}
	if _, ok := b.aeads[current]; !ok {
		return nil, fmt.Errorf("sealbox: current key-encryption key %q is not loaded", current)
	}
	b.derive = bytes.Clone(keks[current])
	return b, nil
}

// CurrentID is the id of the KEK that seals.
func (b *Box) CurrentID() string { return b.current }

// IDs lists the ids of every loaded KEK, sorted.
func (b *Box) IDs() []string {
	ids := make([]string, 0, len(b.aeads))
	for id := range b.aeads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Holds reports whether a KEK with this id is loaded, so that ciphertexts
// sealed under it open.
func (b *Box) Holds(id string) bool {
	_, ok := b.aeads[id]
	return ok
}

// Seal encrypts plaintext under the current KEK. The nonce is random and
// prepended to the ciphertext.
func (b *Box) Seal(plaintext, ad []byte) (kekID string, sealed []byte, err error) {
	aead := b.aeads[b.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("sealbox: nonce: %w", err)
	}
	return b.current, aead.Seal(nonce, nonce, plaintext, ad), nil
}

// Open decrypts a ciphertext sealed under kekID with the same associated data.
func (b *Box) Open(kekID string, sealed, ad []byte) ([]byte, error) {
	aead, ok := b.aeads[kekID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKEK, kekID)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealbox: ciphertext too short")
	}
	pt, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], ad)
	if err != nil {
		return nil, fmt.Errorf("sealbox: open under %q: %w", kekID, err)
	}
	return pt, nil
}

// AssociatedData binds a ciphertext to the row it belongs to.
func AssociatedData(ownerKind, owner, selector string) []byte {
	return []byte("dkimd/v1|" + ownerKind + "|" + owner + "|" + selector)
}

// ParseKeyFile reads a KEK file: one KEK per line, "ID BASE64" or just
// "BASE64" (the id is then derived from the key). The first line seals; all
// lines open, which is how a KEK is rotated: prepend the new one, re-seal,
// then drop the old one. Blank lines and lines starting with # are ignored.
func ParseKeyFile(data []byte) (*Box, error) {
	keks := map[string][]byte{}
	current := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		var id, enc string
		switch len(fields) {
		case 1:
			enc = fields[0]
		case 2:
			id, enc = fields[0], fields[1]
		default:
			return nil, fmt.Errorf("sealbox: key file line %d: want \"ID BASE64\" or \"BASE64\"", n)
		}
		k, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("sealbox: key file line %d: want 32 bytes of base64", n)
		}
		if id == "" {
			id = DeriveID(k)
		}
		if _, dup := keks[id]; dup {
			return nil, fmt.Errorf("sealbox: key file line %d: duplicate key id %q", n, id)
		}
		keks[id] = k
		if current == "" {
			current = id
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sealbox: read key file: %w", err)
	}
	if current == "" {
		return nil, errors.New("sealbox: key file holds no key")
	}
	return New(current, keks)
}

// DeriveID names a KEK by the first 8 bytes of its SHA-256, so the id says
// nothing about the key but still tells keys apart.
func DeriveID(k []byte) string {
	sum := sha256.Sum256(k)
	return "k" + hex.EncodeToString(sum[:8])
}

// LoadFile reads a KEK file, refusing one that anyone but its owner may
// read or change.
func LoadFile(path string) (*Box, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("sealbox: %s is %s by %s (mode %#o); chmod 600 it", path, access(perm), accessors(perm), perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	return ParseKeyFile(data)
}

// access says what a mode lets group and others do with a file.
func access(perm fs.FileMode) string {
	r, w := perm&0o044 != 0, perm&0o022 != 0
	switch {
	case r && w:
		return "readable and writable"
	case w:
		return "writable"
	}
	return "readable"
}

// accessors names who besides the owner a mode lets in: a 0640 file is open
// to its group, not to others.
func accessors(perm fs.FileMode) string {
	g, o := perm&0o070 != 0, perm&0o007 != 0
	switch {
	case g && o:
		return "its group and others"
	case g:
		return "its group"
	}
	return "others"
}

// LoadOrCreate loads dataDir/master.key, generating it with mode 0600 when it
// does not exist yet. created tells the caller to say so in the log.
func LoadOrCreate(dataDir string) (box *Box, path string, created bool, err error) {
	path = filepath.Join(dataDir, KeyFileName)
	box, err = LoadFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return box, path, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, path, false, fmt.Errorf("sealbox: %w", err)
	}
	box, err = Generate(path)
	if errors.Is(err, fs.ErrExist) {
		box, err = LoadFile(path)
		return box, path, false, err
	}
	return box, path, err == nil, err
}

// Generate writes a new KEK file at path with mode 0600 and returns its
// Box. It never replaces a file: if path exists the error is fs.ErrExist,
// so two processes starting at once cannot overwrite each other's key.
func Generate(path string) (*Box, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("sealbox: generate: %w", err)
	}
	content := "# dkimd key-encryption key: one \"ID BASE64\" per line, the first seals.\n" +
		DeriveID(k) + " " + base64.StdEncoding.EncodeToString(k) + "\n"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	// Exactly 0600 whatever the umask took from OpenFile's mode
	// (docs/operator-guide.md, "Data dir").
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealbox: chmod %s: %w", path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealbox: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealbox: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sealbox: close %s: %w", path, err)
	}
	return ParseKeyFile([]byte(content))
}

// DefaultPath is where LoadOrCreate keeps the KEK under dataDir.
func DefaultPath(dataDir string) string { return filepath.Join(dataDir, KeyFileName) }
