package provision

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"io"
	"log/slog"
	"testing"
	"time"

	"dkimd/internal/dkimkey"
)

func TestPoolServesPooledKeysThenFallsBack(t *testing.T) {
	p := NewPool(2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	made := 0
	// A cheap stand-in generator keeps the test fast; the pooled keys must
	// still be the ones it made, in order.
	ed := func() (crypto.Signer, error) {
		made++
		_, k, err := ed25519.GenerateKey(nil)
		return k, err
	}
	p.gen = ed
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for p.Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p.Len() != 2 {
		t.Fatalf("pool holds %d keys, want 2", p.Len())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	misses := 0
	p.OnMiss(func() { misses++ })
	for i := 0; i < 2; i++ {
		k, err := p.Generate(context.Background(), dkimkey.RSA, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := k.(ed25519.PrivateKey); !ok {
			t.Fatalf("key %d did not come from the pool: %T", i, k)
		}
	}
	if misses != 0 {
		t.Fatalf("misses = %d with a full pool", misses)
	}
	k, err := p.Generate(context.Background(), dkimkey.RSA, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := k.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Fatalf("empty pool gave %T, want a generated RSA-2048 key", k)
	}
	if misses != 1 {
		t.Fatalf("misses = %d, want 1", misses)
	}
}
