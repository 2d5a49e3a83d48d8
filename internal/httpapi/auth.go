package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// dummyHash is verified against when a brand does not exist, so that a
// wrong brand name costs as much time as a wrong secret and does not tell
// which brands exist.
// It is made on first use, not at start, since argon2 is slow.
var dummyHash = sync.OnceValues(func() (string, error) {
	return provision.HashSecret("no brand has this secret")
})

// credCache remembers credentials argon2 has accepted, for ttl, keyed by a
// hash of brand and secret: the secret itself is not kept.
type credCache struct {
	ttl time.Duration
	now func() time.Time
	mu  sync.Mutex
	ok  map[[sha256.Size]byte]cred
}

type cred struct {
	brand   string
	expires time.Time
}

func newCredCache(ttl time.Duration, now func() time.Time) *credCache {
	return &credCache{ttl: ttl, now: now, ok: map[[sha256.Size]byte]cred{}}
}

func credKey(brand, secret string) [sha256.Size]byte {
	return sha256.Sum256([]byte(brand + "\x00" + secret))
}

func (c *credCache) valid(brand, secret string) bool {
	k := credKey(brand, secret)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.ok[k]
	if ok && c.now().Before(e.expires) {
		return true
	}
	delete(c.ok, k)
	return false
}

func (c *credCache) add(brand, secret string) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ok) > 10000 {
		for k, e := range c.ok {
			if !now.Before(e.expires) {
				delete(c.ok, k)
			}
		}
	}
	c.ok[credKey(brand, secret)] = cred{brand: brand, expires: now.Add(c.ttl)}
}

// forget drops a brand's cached credentials, after its secret changed or
// it was deleted. Other replicas keep theirs for at most ttl.
func (c *credCache) forget(brand string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.ok {
		if e.brand == brand {
			delete(c.ok, k)
		}
	}
}

// throttle counts failed logins per key and locks a key out for a while
// once it failed max times within window. Keys are a source prefix, or a
// source prefix and a brand (loginKeys); never a brand alone, since then
// anyone anywhere could lock a brand out of its own API.
type throttle struct {
	max     int
	window  time.Duration
	lockout time.Duration
	now     func() time.Time
	mu      sync.Mutex
	keys    map[string]*failures
}

type failures struct {
	n           int
	since       time.Time
	lockedUntil time.Time
}

func newThrottle(max int, window, lockout time.Duration, now func() time.Time) *throttle {
	return &throttle{max: max, window: window, lockout: lockout, now: now, keys: map[string]*failures{}}
}

// wait reports how long key stays locked out.
func (t *throttle) wait(key string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.keys[key]; ok && now.Before(f.lockedUntil) {
		return f.lockedUntil.Sub(now)
	}
	return 0
}

func (t *throttle) fail(key string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.keys) > 100000 {
		for k, f := range t.keys {
			if now.Sub(f.since) > t.window && !now.Before(f.lockedUntil) {
				delete(t.keys, k)
			}
		}
	}
	f, ok := t.keys[key]
	if !ok || now.Sub(f.since) > t.window {
		f = &failures{since: now}
		t.keys[key] = f
	}
	f.n++
	if f.n >= t.max {
		f.lockedUntil = now.Add(t.lockout)
		f.n, f.since = 0, now
	}
}

func (t *throttle) succeed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

func tooMany(d time.Duration) *problem {
	return &problem{status: http.StatusTooManyRequests, code: "TOO_MANY_REQUESTS",
		title: "too many failed logins, try again later", retryAfter: int(math.Ceil(d.Seconds()))}
}

// errHashBusy answers a login whose secret could not be checked within
// Options.HashWait because every hashing slot was taken: the client retries
// in a second rather than holding a connection open behind a flood.
var errHashBusy = &problem{status: http.StatusServiceUnavailable, code: "LOGIN_BUSY",
	title: "too many logins are being checked, try again shortly", retryAfter: 1}

// sourcePrefix is the network a login comes from: the connection's peer
// address cut to its /24 (IPv4) or /56 (IPv6, the smallest allocation a
// customer site gets, RFC 6177), since one attacker holds a whole prefix as
// easily as one address. dkimd does not trust X-Forwarded-For: behind a
// proxy every client shares the proxy's prefix (docs/api.md).
func sourcePrefix(r *http.Request) string {
	var a netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		a = ap.Addr()
	} else if a, err = netip.ParseAddr(r.RemoteAddr); err != nil {
		return r.RemoteAddr
	}
	a = a.Unmap().WithZone("")
	bits := 56
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// loginKeys are the throttle keys of a brand login: the source prefix with
// the brand (pairs), and the source prefix alone (sources), which catches a
// source that tries many brands.
func loginKeys(r *http.Request, brand string) (pair, source string) {
	src := sourcePrefix(r)
	return src + " " + brand, src
}

// brandAuth checks HTTP Basic credentials and that they are those of the
// brand in the path. Credentials verified before are trusted from the cache
// for a minute, also while their source is throttled or every hashing slot
// is busy, so that an attacker hammering a brand does not lock its working
// scripts out. Failures lock out the source prefix for that brand after
// MaxFailures, and for every brand after SourceMaxFailures; the brand itself
// stays open to every other source.
func (s *Server) brandAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		brand, secret, ok := r.BasicAuth()
		if !ok || brand == "" || secret == "" {
			s.unauthorized(w, r, `Basic realm="dkimd", charset="UTF-8"`)
			return
		}
		if !s.creds.valid(brand, secret) {
			pairKey, srcKey := loginKeys(r, brand)
			if d := max(s.pairs.wait(pairKey), s.sources.wait(srcKey)); d > 0 {
				s.fail(w, r, tooMany(d))
				return
			}
			ok, err := s.verifyBrand(r, brand, secret)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if !ok {
				s.pairs.fail(pairKey)
				s.sources.fail(srcKey)
				s.unauthorized(w, r, `Basic realm="dkimd", charset="UTF-8"`)
				return
			}
			// Only the pair: one good login must not wipe the record of a
			// source that guesses at other brands.
			s.pairs.succeed(pairKey)
			s.creds.add(brand, secret)
		}
		infoFrom(r.Context()).brand = brand
		if p := pathBrand(r); p != "" && p != brand { // no brand at all is the router's 404
			s.fail(w, r, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) verifyBrand(r *http.Request, brand, secret string) (bool, error) {
	// One source prefix may hold only its share of the hashing slots, so
	// that a flood from one place leaves slots for logins from elsewhere.
	src := sourcePrefix(r)
	if !s.hashShares.take(src) {
		return false, errHashBusy
	}
	defer s.hashShares.release(src)
	// Each argon2 run takes 64 MiB and a core for ~100 ms: bound how many run
	// at once (GOMAXPROCS), so that a flood of bad logins from many sources
	// can neither exhaust memory nor take every core from cached logins and
	// the other routes. A login that finds no slot within hashWait is told
	// to come back (503, Retry-After) instead of queueing without end.
	t := time.NewTimer(s.hashWait)
	defer t.Stop()
	select {
	case s.argonSlots <- struct{}{}:
		defer func() { <-s.argonSlots }()
	case <-t.C:
		return false, errHashBusy
	case <-r.Context().Done():
		return false, r.Context().Err()
	}
	b, err := s.store.Brand(r.Context(), brand)
	exists := err == nil
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		if b.SecretHash, err = dummyHash(); err != nil {
			return false, err
		}
	case err != nil:
		return false, err
	}
	ok, err := provision.VerifySecret(b.SecretHash, secret)
	if err != nil {
		return false, err
	}
	return ok && exists, nil
}

// shares counts the hashing slots each source prefix holds or waits for,
// and lets none hold more than max.
type shares struct {
	max  int
	mu   sync.Mutex
	held map[string]int
}

// newShares gives each source half the slots (at least one), so that with
// two cores or more one source never holds them all.
func newShares(slots int) *shares {
	return &shares{max: max(1, slots/2), held: map[string]int{}}
}

func (h *shares) take(src string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[src] >= h.max {
		return false
	}
	h.held[src]++
	return true
}

func (h *shares) release(src string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[src]--; h.held[src] <= 0 {
		delete(h.held, src)
	}
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, challenge string) {
	w.Header().Set("WWW-Authenticate", challenge)
	s.fail(w, r, errUnauthorized)
}

// operatorAuth checks the admin bearer token. Hashing both sides first makes
// the comparison constant-time in the token's length too.
func (s *Server) operatorAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const challenge = `Bearer realm="dkimd-admin"`
		// Its own key: a brand's failures from a prefix do not lock the
		// operator on that prefix out, nor the other way round.
		ipKey := "admin " + sourcePrefix(r)
		if d := s.pairs.wait(ipKey); d > 0 {
			s.fail(w, r, tooMany(d))
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" || !s.operatorSet {
			s.unauthorized(w, r, challenge)
			return
		}
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], s.operatorSum[:]) != 1 {
			s.pairs.fail(ipKey)
			s.unauthorized(w, r, challenge)
			return
		}
		infoFrom(r.Context()).brand = "operator"
		next.ServeHTTP(w, r)
	})
}

// pathBrand is the {brand} segment of a brand API path. The middleware runs
// before chi has matched the sub-route, so it cuts the path itself.
func pathBrand(r *http.Request) string {
	rest := strings.TrimPrefix(r.URL.Path, BrandBase+"/")
	b, _, _ := strings.Cut(rest, "/")
	return b
}

// pathParam is a path parameter, percent-decoded: chi matches on the raw
// path when the request has one, and hands out its parameters still escaped.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}
