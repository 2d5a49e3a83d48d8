package provision

import (
	"context"
	"crypto"
	"log/slog"

	"dkimd/internal/dkimkey"
)

// Pool keeps a bounded number of RSA keys of the default size generated
// ahead in the background, so that a PUT, which needs two keys, does not
// wait ~160 ms for key generation (PERFORMANCE.md). Other sizes and Ed25519
// keys are generated on demand. Pooled keys live only in memory: a restart
// loses them, which costs nothing but a refill.
type Pool struct {
	keys   chan crypto.Signer
	log    *slog.Logger
	gen    func() (crypto.Signer, error)
	onMiss func()
}

// NewPool makes a pool of size keys; Run fills it.
func NewPool(size int, log *slog.Logger) *Pool {
	return &Pool{
		keys: make(chan crypto.Signer, size),
		log:  log,
		gen:  func() (crypto.Signer, error) { return dkimkey.Generate(dkimkey.RSA, dkimkey.DefaultRSABits) },
	}
}

// Run refills the pool until ctx ends. One goroutine is enough: it leaves
// the other core to serving, and a burst beyond the pool's size falls back
// to generating inline.
func (p *Pool) Run(ctx context.Context) error {
	for {
		k, err := p.gen()
		if err != nil {
			p.log.Error("key pool: generate", slog.Any("err", err))
			return err
		}
		select {
		case p.keys <- k:
		case <-ctx.Done():
			return nil
		}
	}
}

// Len is how many keys are ready.
func (p *Pool) Len() int { return len(p.keys) }

// Cap is the pool's size.
func (p *Pool) Cap() int { return cap(p.keys) }

// OnMiss registers f to be called when a request found the pool empty.
func (p *Pool) OnMiss(f func()) { p.onMiss = f }

// Generate takes a pooled key when it fits, else generates one.
func (p *Pool) Generate(ctx context.Context, alg string, bits int) (crypto.Signer, error) {
	if alg == dkimkey.RSA && bits == dkimkey.DefaultRSABits {
		select {
		case k := <-p.keys:
			return k, nil
		default:
			if p.onMiss != nil {
				p.onMiss()
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return dkimkey.Generate(alg, bits)
}
