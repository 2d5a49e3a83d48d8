package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestSourcePrefix(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:1000", "192.0.2.0/24"},
		{"192.0.2.254:1", "192.0.2.0/24"},
		{"192.0.3.1:1", "192.0.3.0/24"},
		{"[::ffff:192.0.2.9]:1", "192.0.2.0/24"}, // IPv4 on a dual-stack socket
		{"[2001:db8:0:1::1]:443", "2001:db8::/56"},
		{"[2001:db8:0:ff::2]:443", "2001:db8::/56"},
		{"[2001:db8:0:100::1]:443", "2001:db8:0:100::/56"},
		{"[fe80::1%eth0]:1", "fe80::/56"},
		{"192.0.2.7", "192.0.2.0/24"}, // no port
		{"not an address", "not an address"},
	} {
		t.Run(tc.remote, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			if got := sourcePrefix(r); got != tc.want {
				t.Errorf("sourcePrefix(%q) = %q, want %q", tc.remote, got, tc.want)
			}
		})
	}
}

// The reported case: failed logins for a brand from one place used to lock
// the brand out everywhere once its credential cache expired.
func TestFloodFromOneSourceLeavesTheBrandOpenElsewhere(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.MaxFailures = 3; o.Lockout = 10 * time.Minute })
	e.brand("acme")
	list := dkimPath + "/acme"
	real := e.as("acme", "GET", list)
	real.remote = "198.51.100.7:4000"
	wantStatus(t, e.do(real), 404)

	flood := func(remote string) req {
		return req{method: "GET", path: list, user: "acme", pass: "guess", remote: remote}
	}
	for i := range 3 {
		wantError(t, e.do(flood("192.0.2."+strconv.Itoa(10+i)+":1000")), 401, "UNAUTHORIZED", "")
	}
	for _, remote := range []string{"192.0.2.10:1000", "192.0.2.99:2000"} {
		wantError(t, e.do(flood(remote)), 429, "TOO_MANY_REQUESTS", "")
	}
	e.clock.Add(61 * time.Second) // the real brand's cached credentials expire
	for i := range 3 {
		t.Run("real brand, round "+strconv.Itoa(i), func(t *testing.T) {
			wantStatus(t, e.do(real), 404)
			wantError(t, e.do(flood("192.0.2.10:1000")), 429, "TOO_MANY_REQUESTS", "")
			e.clock.Add(61 * time.Second) // past the cache again, still inside the lockout
		})
	}
	t.Run("IPv6 flood is per /56", func(t *testing.T) {
		for range 3 {
			e.do(flood("[2001:db8:0:1::1]:1"))
		}
		wantError(t, e.do(flood("[2001:db8:0:ff::2]:1")), 429, "TOO_MANY_REQUESTS", "")
		r := real
		r.remote = "[2001:db8:0:100::1]:1"
		e.clock.Add(61 * time.Second)
		wantStatus(t, e.do(r), 404)
	})
}

func TestSourceTryingManyBrandsIsThrottledAsAWhole(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.MaxFailures = 3; o.SourceMaxFailures = 5 })
	e.brand("acme")
	const attacker = "192.0.2.1:1000"
	// One guess at each of five brands: no brand reaches 3 for this source,
	// the source reaches 5.
	for i := range 5 {
		b := "brand" + strconv.Itoa(i)
		wantError(t, e.do(req{method: "GET", path: dkimPath + "/" + b, user: b, pass: "guess", remote: attacker}), 401, "UNAUTHORIZED", "")
	}
	t.Run("locked for a brand it never tried", func(t *testing.T) {
		w := e.do(req{method: "GET", path: dkimPath + "/brand9", user: "brand9", pass: "guess", remote: attacker})
		wantError(t, w, 429, "TOO_MANY_REQUESTS", "")
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q", w.Header().Get("Retry-After"))
		}
	})
	t.Run("locked even with a correct secret", func(t *testing.T) {
		r := e.as("acme", "GET", dkimPath+"/acme")
		r.remote = "192.0.2.77:1"
		wantError(t, e.do(r), 429, "TOO_MANY_REQUESTS", "")
	})
	t.Run("other sources unaffected", func(t *testing.T) {
		r := e.as("acme", "GET", dkimPath+"/acme")
		r.remote = "192.0.3.1:1"
		wantStatus(t, e.do(r), 404)
	})
	t.Run("lockout ends", func(t *testing.T) {
		e.clock.Add(61 * time.Second)
		r := e.as("acme", "GET", dkimPath+"/acme")
		r.remote = attacker
		wantStatus(t, e.do(r), 404)
	})
}

// takeAllHashSlots holds every password-hashing slot, as a flood of
// uncached logins does, until the returned function is called.
func takeAllHashSlots(s *Server) (release func()) {
	for range cap(s.argonSlots) {
		s.argonSlots <- struct{}{}
	}
	return func() {
		for range cap(s.argonSlots) {
			<-s.argonSlots
		}
	}
}

func TestCachedLoginsAnswerWhileHashingIsSaturated(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.HashWait = 20 * time.Millisecond })
	e.brand("acme")
	e.brand("other")
	if got := cap(e.srv.argonSlots); got != runtime.GOMAXPROCS(0) {
		t.Fatalf("%d hashing slots, want GOMAXPROCS = %d", got, runtime.GOMAXPROCS(0))
	}
	cached := e.as("acme", "GET", dkimPath+"/acme")
	wantStatus(t, e.do(cached), 404)

	release := takeAllHashSlots(e.srv)
	t.Run("cached login", func(t *testing.T) {
		wantStatus(t, e.do(cached), 404)
	})
	t.Run("routes without a login", func(t *testing.T) {
		wantStatus(t, e.do(req{method: "GET", path: "/openapi.json"}), 200)
		wantStatus(t, e.admin("GET", "/brands", ""), 200)
	})
	t.Run("uncached login is told to retry", func(t *testing.T) {
		w := e.do(e.as("other", "GET", dkimPath+"/other"))
		wantError(t, w, 503, "LOGIN_BUSY", "try again")
		if ra := w.Header().Get("Retry-After"); ra != "1" {
			t.Errorf("Retry-After %q, want 1", ra)
		}
	})
	t.Run("busy is not a failed login", func(t *testing.T) {
		if d := e.srv.pairs.wait(sourcePrefix(httptest.NewRequest("GET", "/", nil)) + " other"); d != 0 {
			t.Errorf("a busy answer counted as a failure: locked for %s", d)
		}
	})
	release()
	t.Run("uncached login after the flood", func(t *testing.T) {
		wantStatus(t, e.do(e.as("other", "GET", dkimPath+"/other")), 404)
	})
}

// TestThrottleOnARealListener runs the flood and the real brand over TCP
// from two loopback source addresses in different /24s, so the prefix comes
// from the connection itself, not from a test's RemoteAddr.
func TestThrottleOnARealListener(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.MaxFailures = 3; o.Lockout = 10 * time.Minute })
	e.brand("acme")
	srv := httptest.NewServer(e.srv)
	t.Cleanup(srv.Close)

	from := func(local string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	get := func(c *http.Client, secret string) int {
		t.Helper()
		r, err := http.NewRequest("GET", srv.URL+dkimPath+"/acme", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.SetBasicAuth("acme", secret)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	attacker, brand := from("127.0.1.1"), from("127.0.0.1")
	if got := get(brand, e.secrets["acme"]); got != 404 {
		t.Fatalf("real brand before the flood: %d", got)
	}
	for range 3 {
		if got := get(attacker, "guess"); got != 401 {
			t.Fatalf("flood: %d, want 401", got)
		}
	}
	if got := get(attacker, "guess"); got != 429 {
		t.Fatalf("flood after 3 failures: %d, want 429", got)
	}
	e.clock.Add(61 * time.Second) // the cache entry from before expires
	if got := get(brand, e.secrets["acme"]); got != 404 {
		t.Errorf("real brand from 127.0.0.1 during the flood from 127.0.1.1: %d, want 404", got)
	}
}

// TestOneSourceHoldsOnlyItsShareOfHashing: a flood from one prefix that
// holds its share of the hashing slots is told to retry at once, and a
// login from another prefix still gets a slot.
func TestOneSourceHoldsOnlyItsShareOfHashing(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store, func(o *Options) { o.HashWait = 20 * time.Millisecond })
	e.brand("acme")
	const flooder = "192.0.2.0/24"
	share := max(1, cap(e.srv.argonSlots)/2)
	for range share {
		if !e.srv.hashShares.take(flooder) {
			t.Fatal("could not take the share")
		}
	}
	flood := e.as("acme", "GET", dkimPath+"/acme")
	flood.remote = "192.0.2.77:1"
	w := e.do(flood)
	wantError(t, w, 503, "LOGIN_BUSY", "")
	if ra := w.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q", ra)
	}
	if cap(e.srv.argonSlots) > 1 {
		other := e.as("acme", "GET", dkimPath+"/acme")
		other.remote = "198.51.100.1:1"
		wantStatus(t, e.do(other), 404)
	}
	for range share {
		e.srv.hashShares.release(flooder)
	}
	e.srv.creds.forget("acme")
	wantStatus(t, e.do(flood), 404)
	if n := len(e.srv.hashShares.held); n != 0 {
		t.Errorf("%d sources still hold shares after every login ended", n)
	}
}
