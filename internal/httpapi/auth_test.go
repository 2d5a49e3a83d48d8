package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestBrandAuth(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme", "spamtrap.dk")
	e.brand("other")
	list := dkimPath + "/acme"

	for _, tc := range []struct {
		name   string
		req    req
		status int
		code   string
	}{
		{"no credentials", req{method: "GET", path: list}, 401, "UNAUTHORIZED"},
		{"wrong secret", req{method: "GET", path: list, user: "acme", pass: "wrong"}, 401, "UNAUTHORIZED"},
		{"unknown brand", req{method: "GET", path: dkimPath + "/nobody", user: "nobody", pass: e.secrets["acme"]}, 401, "UNAUTHORIZED"},
		{"another brand's secret", req{method: "GET", path: list, user: "acme", pass: e.secrets["other"]}, 401, "UNAUTHORIZED"},
		{"operator token as password", req{method: "GET", path: list, user: "acme", pass: testOperator}, 401, "UNAUTHORIZED"},
		{"operator bearer token", req{method: "GET", path: list, bearer: testOperator}, 401, "UNAUTHORIZED"},
		{"another brand's path", e.as("other", "GET", list), 403, "FORBIDDEN"},
		{"another brand's domain path", e.as("other", "PUT", list+"/spamtrap.dk"), 403, "FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, store)
			w := e.do(tc.req)
			wantError(t, w, tc.status, tc.code, "")
			if tc.status == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("WWW-Authenticate %q", w.Header().Get("WWW-Authenticate"))
			}
			unchanged(t, store, before)
		})
	}
	t.Run("good credentials", func(t *testing.T) {
		wantError(t, e.do(e.as("acme", "GET", list)), 404, "NO_DKIM_ENTRIES", "No DKIM entries found")
	})
}

func TestCredentialCache(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme")
	list := dkimPath + "/acme"
	wantStatus(t, e.do(e.as("acme", "GET", list)), 404)

	// A cached credential does not touch argon2: timing it would be flaky,
	// so prove it by the store. With the hash gone, only the cache can
	// accept the secret.
	b, err := store.Brand(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	b.SecretHash = "$argon2id$v=19$m=65536,t=3,p=2$AAAA$AAAA"
	if err := store.Update(t.Context(), func(tx keystore.Tx) error { _, err := tx.UpdateBrand(t.Context(), b); return err }); err != nil {
		t.Fatal(err)
	}
	t.Run("cached", func(t *testing.T) {
		wantStatus(t, e.do(e.as("acme", "GET", list)), 404)
	})
	t.Run("expired", func(t *testing.T) {
		e.clock.Add(61 * time.Second)
		wantError(t, e.do(e.as("acme", "GET", list)), 401, "UNAUTHORIZED", "")
	})
	t.Run("wrong secret never cached", func(t *testing.T) {
		r := e.as("acme", "GET", list)
		r.pass += "x"
		wantError(t, e.do(r), 401, "UNAUTHORIZED", "")
	})
}

func TestThrottle(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.MaxFailures = 3 })
	e.brand("acme")
	e.brand("other")
	list := dkimPath + "/acme"
	good := e.as("acme", "GET", list)
	good.remote = "198.51.100.7:4000"
	wantStatus(t, e.do(good), 404) // cached from here on

	bad := func(user, remote string) req {
		return req{method: "GET", path: dkimPath + "/" + user, user: user, pass: "guess", remote: remote}
	}
	for i := range 3 {
		wantError(t, e.do(bad("acme", "192.0.2.1:1000")), 401, "UNAUTHORIZED", "")
		_ = i
	}
	t.Run("locked out", func(t *testing.T) {
		w := e.do(bad("acme", "192.0.2.1:1000"))
		wantError(t, w, 429, "TOO_MANY_REQUESTS", "")
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q", w.Header().Get("Retry-After"))
		}
	})
	t.Run("per source and brand", func(t *testing.T) {
		// Same source, another brand: three failures are below the
		// source-wide limit (3×3), so only acme is locked for it.
		wantError(t, e.do(bad("other", "192.0.2.1:1000")), 401, "UNAUTHORIZED", "")
	})
	t.Run("same prefix, another address", func(t *testing.T) {
		// 192.0.2.1 and 192.0.2.200 are one /24: one attacker.
		wantError(t, e.do(bad("acme", "192.0.2.200:1000")), 429, "TOO_MANY_REQUESTS", "")
	})
	t.Run("brand open from elsewhere", func(t *testing.T) {
		// Another source, same brand: the brand is not locked, even for
		// correct credentials that are not cached.
		r := e.as("acme", "GET", list)
		r.remote = "203.0.113.9:1"
		wantStatus(t, e.do(r), 404)
	})
	t.Run("cached credentials still work", func(t *testing.T) {
		wantStatus(t, e.do(good), 404)
	})
	t.Run("lockout ends", func(t *testing.T) {
		e.clock.Add(61 * time.Second)
		wantError(t, e.do(bad("acme", "192.0.2.1:1000")), 401, "UNAUTHORIZED", "")
		r := e.as("other", "GET", dkimPath+"/other")
		r.remote = "192.0.2.1:1000"
		wantStatus(t, e.do(r), http.StatusNotFound)
	})
}

func TestOperatorAuth(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme")
	for _, tc := range []struct {
		name string
		req  req
	}{
		{"no token", req{method: "GET", path: AdminBase + "/brands"}},
		{"wrong token", req{method: "GET", path: AdminBase + "/brands", bearer: testOperator + "x"}},
		{"brand credentials", e.as("acme", "GET", AdminBase+"/brands")},
		{"brand secret as token", req{method: "GET", path: AdminBase + "/brands", bearer: e.secrets["acme"]}},
		{"token as basic auth", req{method: "POST", path: AdminBase + "/brands", body: `{"name":"x"}`, user: "operator", pass: testOperator}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, store)
			w := e.do(tc.req)
			wantError(t, w, 401, "UNAUTHORIZED", "")
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("WWW-Authenticate %q", w.Header().Get("WWW-Authenticate"))
			}
			unchanged(t, store, before)
		})
	}
	t.Run("no token configured", func(t *testing.T) {
		e := newEnv(t, store, func(o *Options) { o.OperatorToken = "" })
		wantError(t, e.do(req{method: "GET", path: AdminBase + "/brands", bearer: "x"}), 401, "UNAUTHORIZED", "")
	})
}
