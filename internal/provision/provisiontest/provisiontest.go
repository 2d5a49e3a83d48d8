// Package provisiontest gives tests a provisioning service whose RSA keys
// come from a fixed set of pre-generated test keys, since generating RSA-2048
// keys costs ~80 ms each (far more under -race) and tests create many
// domains. The keys in testdata/ are test material only and sign nothing real.
package provisiontest

import (
	"context"
	"crypto"
	"embed"
	"encoding/pem"
	"fmt"
	"path"
	"sync"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
)

//go:embed testdata/*.pem
var testdata embed.FS

// Generator hands out the test RSA-2048 keys in turn and generates other
// sizes and Ed25519 keys for real.
type Generator struct {
	mu   sync.Mutex
	keys []crypto.Signer
	next int
}

// NewGenerator loads the test keys.
func NewGenerator() (*Generator, error) {
	entries, err := testdata.ReadDir("testdata")
	if err != nil {
		return nil, err
	}
	g := &Generator{}
	for _, e := range entries {
		b, err := testdata.ReadFile(path.Join("testdata", e.Name()))
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("provisiontest: %s is not PEM", e.Name())
		}
		k, err := dkimkey.ParsePrivate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("provisiontest: %s: %w", e.Name(), err)
		}
		g.keys = append(g.keys, k)
	}
	return g, nil
}

// Generate returns the next test key for RSA-2048.
func (g *Generator) Generate(_ context.Context, alg string, bits int) (crypto.Signer, error) {
	if alg != dkimkey.RSA || bits != 2048 {
		return dkimkey.Generate(alg, bits)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k := g.keys[g.next%len(g.keys)]
	g.next++
	return k, nil
}

// Service returns a provisioning service on store with a fresh KEK in a
// temporary dir and the test keys. now may be nil for time.Now.
func Service(t testing.TB, store keystore.Store, zone string, now func() time.Time) *provision.Service {
	t.Helper()
	box, _, _, err := sealbox.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gen, err := NewGenerator()
	if err != nil {
		t.Fatal(err)
	}
	if now == nil {
		now = time.Now
	}
	return &provision.Service{Store: store, Box: box, Keys: gen, Zone: zone, Now: now}
}
