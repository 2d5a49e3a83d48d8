package signer

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// Bounds on the in-memory caches. Past them a cache starts over: simpler
// than an LRU, and a cache this size is rebuilt from the store in seconds.
const (
	maxPlans = 100_000
	maxKeys  = 20_000
	maxFroms = 50_000
	// maxFromLen is the longest From value remembered: a From of any
	// length parses, but 50,000 of the header block's megabyte each would
	// be memory for the taking.
	maxFromLen = 256
)

// signingKey is one parsed private key and where it is published.
type signingKey struct {
	selector, algorithm, fingerprint string
	signer                           crypto.Signer
}

// plan is the signing decision for one From domain, kept until the keys
// change (Invalidate) or it is older than MaxAge.
type plan struct {
	fromDomain string
	mode       string
	domain     string        // d=
	keys       []*signingKey // RSA first
	refusal    *Refusal      // not nil: do not sign, and why
	gen        uint64
	loadedAt   time.Time
}

// keyID is a key's slot. The cache holds the slot's current key: when
// rotation replaces it, its successor takes the entry and the old key is
// closed (for the OpenSSL backend, freed inside libcrypto).
type keyID struct {
	kind            keystore.OwnerKind
	owner, selector string
}

// cache holds the signing decisions per From domain and the parsed private
// keys. Parsing an RSA key (unseal, PKCS#8, precomputation) costs about as
// much as a signature, so each key is parsed once.
type cache struct {
	s   *Signer
	gen atomic.Uint64

	mu    sync.RWMutex
	plans map[string]*plan
	keys  map[keyID]*signingKey
	// names maps a From domain as written to its normalised form: IDNA
	// mapping costs more than the rest of the key choice, and a sender
	// writes its domain the same way in every message.
	names map[string]string
	// froms maps a From field's value to the domain of its address:
	// parsing the address costs a few microseconds a message, and a
	// sender's From reads the same in every message it sends.
	froms map[string]string
}

func newCache(s *Signer) *cache {
	return &cache{s: s, plans: make(map[string]*plan), keys: make(map[keyID]*signingKey), names: make(map[string]string),
		froms: make(map[string]string)}
}

func (c *cache) invalidate() { c.gen.Add(1) }

// fromDomain is the package's fromDomain, remembered for the From fields
// that it parsed.
func (c *cache) fromDomain(from []string) (string, error) {
	if len(from) == 1 {
		c.mu.RLock()
		domain, ok := c.froms[from[0]]
		c.mu.RUnlock()
		if ok {
			return domain, nil
		}
	}
	domain, err := fromDomain(from)
	if err != nil || len(from[0]) > maxFromLen {
		return domain, err
	}
	c.mu.Lock()
	if len(c.froms) >= maxFroms {
		clear(c.froms)
	}
	c.froms[from[0]] = domain
	c.mu.Unlock()
	return domain, nil
}

// plan returns the decision for a From domain as written in the message.
func (c *cache) plan(ctx context.Context, from string) (*plan, error) {
	c.mu.RLock()
	domain, known := c.names[from]
	var p *plan
	if known {
		p = c.plans[domain]
	}
	c.mu.RUnlock()
	if !known {
		var err error
		domain, err = domainname.Normalize(from, c.s.opts.Zone)
		if err != nil {
			return nil, refuse(CodeBadFrom, "the From domain %q is not a domain dkimd signs for: %v", truncate(from, 80), err)
		}
		c.mu.Lock()
		if len(c.names) >= maxPlans {
			clear(c.names)
		}
		c.names[strings.Clone(from)] = domain
		p = c.plans[domain]
		c.mu.Unlock()
	}
	gen := c.gen.Load()
	now := c.s.opts.Now()
	if p != nil && p.gen == gen && now.Sub(p.loadedAt) < c.s.opts.MaxAge {
		return p, nil
	}
	fresh, err := c.resolve(ctx, domain)
	if err != nil {
		if p != nil {
			// The store is away: keep signing with what was true a moment
			// ago rather than stop the mail (docs/reliability.md, "Faults").
			c.s.metrics.stale.Inc()
			c.s.opts.Log.Warn("signing with cached keys, the store failed", slog.String("domain", domain), slog.Any("err", err))
			return p, nil
		}
		if d := c.s.dir.Load(); d != nil {
			if fp := d.fallback(domain, c.s.opts.Zone); fp != nil {
				// Never resolved, but a maildomain of one brand when the
				// directory was loaded: sign with the brand's key, valid if
				// not aligned, rather than stop the mail.
				c.s.metrics.outage.Inc()
				c.s.opts.Log.Warn("signing with the brand's fallback key, the store failed", slog.String("domain", domain),
					slog.String("d", fp.domain), slog.Any("err", err))
				return fp, nil
			}
		}
		return nil, err
	}
	fresh.gen, fresh.loadedAt = gen, now
	c.mu.Lock()
	if len(c.plans) >= maxPlans {
		clear(c.plans)
	}
	c.plans[domain] = fresh
	c.mu.Unlock()
	return fresh, nil
}

// resolve decides from the store how mail from domain is signed.
func (c *cache) resolve(ctx context.Context, domain string) (*plan, error) {
	st := c.s.opts.Store
	d, err := st.Domain(ctx, domain)
	found := err == nil
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("signer: %w", err)
	}
	if found && d.Status == keystore.StatusActive {
		keys, err := c.active(ctx, keystore.OwnerDomain, domain, d.ActiveSelector)
		if err != nil {
			return nil, err
		}
		if keys != nil {
			return &plan{fromDomain: domain, mode: ModeAligned, domain: domain, keys: keys}, nil
		}
		c.s.opts.Log.Warn("active domain has no active RSA key, signing with the brand's key", slog.String("domain", domain))
	}

	brands, err := st.MaildomainBrands(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	brand := ""
	switch {
	case found && slices.Contains(brands, d.Brand):
		brand = d.Brand
	case len(brands) == 1:
		brand = brands[0]
	case len(brands) == 0:
		return &plan{fromDomain: domain, refusal: refuse(CodeUnknownDomain, "%s is not a maildomain of any brand", domain)}, nil
	default:
		// Signing for one of them would vouch for mail the other may have
		// sent: refuse until an operator removes the duplicate.
		return &plan{fromDomain: domain, refusal: refuse(CodeAmbiguousDomain, "%s is a maildomain of %d brands", domain, len(brands))}, nil
	}
	keys, err := c.active(ctx, keystore.OwnerBrand, brand, domainname.Selector1)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return &plan{fromDomain: domain, refusal: refuse(CodeNoActiveKey, "brand %s of %s has no active key", brand, domain)}, nil
	}
	return &plan{fromDomain: domain, mode: ModeFallback, domain: brand + "." + c.s.opts.Zone, keys: keys}, nil
}

// active returns the owner's active RSA key (preferring the selector the
// owner says is active) and, when there is one, its active Ed25519 key; nil
// when there is no active RSA key, since Ed25519 never signs alone.
func (c *cache) active(ctx context.Context, kind keystore.OwnerKind, owner, preferred string) ([]*signingKey, error) {
	all, err := c.s.opts.Store.Keys(ctx, kind, owner)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	var rsaKey, edKey *keystore.Key
	for i := range all {
		k := &all[i]
		if k.State != keystore.StateActive || k.SealedPrivateKey == nil {
			c.retire(k)
			continue
		}
		switch k.Algorithm {
		case dkimkey.RSA:
			if rsaKey == nil || k.Selector == preferred {
				rsaKey = k
			}
		case dkimkey.Ed25519:
			if edKey == nil {
				edKey = k
			}
		}
	}
	if rsaKey == nil {
		return nil, nil
	}
	var out []*signingKey
	for _, k := range []*keystore.Key{rsaKey, edKey} {
		if k == nil {
			continue
		}
		sk, err := c.parsed(*k)
		if err != nil {
			return nil, err
		}
		out = append(out, sk)
	}
	return out, nil
}

// parsed returns the key parsed, from memory when it was parsed before.
func (c *cache) parsed(k keystore.Key) (*signingKey, error) {
	id := keyID{k.OwnerKind, k.Owner, k.Selector}
	c.mu.RLock()
	sk := c.keys[id]
	c.mu.RUnlock()
	if sk != nil && sk.fingerprint == k.Fingerprint {
		return sk, nil
	}
	priv, err := dkimkey.Open(c.s.opts.Box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
	if err != nil {
		return nil, fmt.Errorf("signer: open key %s/%s: %w", k.Owner, k.Selector, err)
	}
	signer := crypto.Signer(priv)
	if rk, ok := priv.(*rsa.PrivateKey); ok {
		if signer, err = c.s.opts.RSA(rk); err != nil {
			return nil, fmt.Errorf("signer: key %s/%s: %w", k.Owner, k.Selector, err)
		}
	}
	sk = &signingKey{selector: k.Selector, algorithm: k.Algorithm, fingerprint: k.Fingerprint, signer: signer}
	c.s.metrics.keyLoads.Inc()
	c.s.opts.Log.Info("loaded signing key", slog.String("owner", k.Owner), slog.String("selector", k.Selector),
		slog.String("fingerprint", k.Fingerprint))
	c.mu.Lock()
	if len(c.keys) >= maxKeys {
		// Keys that plans still hold sign on; the collector frees the rest.
		clear(c.keys)
	}
	old := c.keys[id]
	c.keys[id] = sk
	c.mu.Unlock()
	if old != nil && old.fingerprint != sk.fingerprint {
		closeKey(old) // rotation gave the slot a new key
	}
	return sk, nil
}

// retire drops k from the cache if it is the key cached for its slot: it is
// no longer active, so no fresh plan signs with it.
func (c *cache) retire(k *keystore.Key) {
	id := keyID{k.OwnerKind, k.Owner, k.Selector}
	c.mu.RLock()
	sk := c.keys[id]
	c.mu.RUnlock()
	if sk == nil || sk.fingerprint != k.Fingerprint {
		return
	}
	c.mu.Lock()
	if c.keys[id] != sk {
		c.mu.Unlock()
		return
	}
	delete(c.keys, id)
	c.mu.Unlock()
	closeKey(sk)
}

// closeKey frees what Options.RSA made for a key that left the cache. A
// plan made before may still sign with it: a closed OpenSSL key signs on
// through crypto/rsa (rsasign.Key.Close).
func closeKey(sk *signingKey) {
	if cl, ok := sk.signer.(io.Closer); ok {
		_ = cl.Close()
	}
}
