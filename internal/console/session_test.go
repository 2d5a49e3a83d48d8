package console_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"dkimd/internal/console"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// client is a browser stand-in: a cookie jar and the CSRF token.
type client struct {
	t    *testing.T
	s    *stack
	http *http.Client
	csrf string
}

func (s *stack) client(t *testing.T) *client {
	t.Helper()
	jar := &jar{}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if s.srv.TLS != nil {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	return &client{t: t, s: s, http: c}
}

// jar keeps cookies by name for the test server, as a browser would,
// including the attributes the server set.
type jar struct {
	mu      sync.Mutex
	cookies map[string]*http.Cookie
}

func (j *jar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cookies == nil {
		j.cookies = map[string]*http.Cookie{}
	}
	for _, c := range cs {
		if c.MaxAge < 0 {
			delete(j.cookies, c.Name)
			continue
		}
		j.cookies[c.Name] = c
	}
}

func (j *jar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*http.Cookie
	for _, c := range j.cookies {
		out = append(out, &http.Cookie{Name: c.Name, Value: c.Value})
	}
	return out
}

func (j *jar) get(name string) *http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cookies[name]
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// title is the error envelope's code and title.
func (a answer) problem() (code, title string) {
	var env struct {
		Errors []struct{ Code, Title string }
	}
	if json.Unmarshal(a.body, &env) != nil || len(env.Errors) != 1 {
		return "", ""
	}
	return env.Errors[0].Code, env.Errors[0].Title
}

// do makes a request; csrf sends the token; body, when not nil, is JSON.
func (c *client) do(method, path string, body any, csrf bool) answer {
	c.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, c.s.srv.URL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if csrf {
		req.Header.Set(console.CSRFHeader, c.csrf)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		c.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: buf.Bytes()}
}

func (c *client) signIn(brand, secret string) answer {
	c.t.Helper()
	a := c.do("POST", "/console/session", map[string]string{"brand": brand, "secret": secret}, false)
	if a.status == 200 {
		var info struct{ Brand, CSRFToken string }
		if err := json.Unmarshal(a.body, &info); err != nil || info.Brand != brand || info.CSRFToken == "" {
			c.t.Fatalf("sign-in answer %s (%v)", a.body, err)
		}
		c.csrf = info.CSRFToken
	}
	return a
}

func wantProblem(t *testing.T, a answer, status int, code string) {
	t.Helper()
	got, title := a.problem()
	if a.status != status || got != code {
		t.Fatalf("answer %d %s (%s), want %d %s", a.status, got, title, status, code)
	}
}

func TestSignIn(t *testing.T) {
	t.Parallel()
	st := newStack(t, stackOptions{})
	st.brand("acme", "spamtrap.dk")
	st.brand("beta", "beta.dk")

	t.Run("wrong secret", func(t *testing.T) {
		c := st.client(t)
		a := c.signIn("acme", "wrong")
		wantProblem(t, a, 401, "UNAUTHORIZED")
		if _, title := a.problem(); title != "missing or bad credentials" {
			t.Errorf("title %q", title)
		}
		if ch := a.header.Get("WWW-Authenticate"); strings.HasPrefix(ch, "Basic") || ch == "" {
			t.Errorf("WWW-Authenticate %q: a Basic challenge makes browsers open their own login box", ch)
		}
		if a.header.Get("Set-Cookie") != "" {
			t.Error("a failed sign-in set a cookie")
		}
	})
	for _, tc := range []struct {
		name, ct, body string
		status         int
		code           string
	}{
		{"form post", "application/x-www-form-urlencoded", "brand=acme&secret=x", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"not JSON", "application/json", "{", 400, "INVALID_BODY"},
		{"unknown field", "application/json", `{"brand":"acme","secret":"x","admin":true}`, 400, "INVALID_BODY"},
		{"no secret", "application/json", `{"brand":"acme"}`, 400, "INVALID_BODY"},
		{"too large", "application/json", `{"brand":"` + strings.Repeat("a", 5000) + `","secret":"x"}`, 413, "BODY_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(st.srv.URL+"/console/session", tc.ct, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			wantProblem(t, answer{status: resp.StatusCode, body: buf.Bytes()}, tc.status, tc.code)
			if resp.Header.Get("Set-Cookie") != "" {
				t.Error("set a cookie")
			}
		})
	}

	c := st.client(t)
	t.Run("right secret", func(t *testing.T) {
		a := c.signIn("acme", st.secrets["acme"])
		if a.status != 200 {
			t.Fatalf("sign-in %d %s", a.status, a.body)
		}
		ck := c.http.Jar.(*jar).get(console.CookieName)
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" {
			t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over HTTP", ck)
		}
		if ck.MaxAge < int((12*time.Hour-time.Minute).Seconds()) || ck.MaxAge > int((12*time.Hour).Seconds()) {
			t.Errorf("cookie lives %d s, want 12 h", ck.MaxAge)
		}
		if strings.Contains(ck.Value, st.secrets["acme"]) {
			t.Error("the cookie holds the secret")
		}
		if cc := a.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
	})
	t.Run("current session", func(t *testing.T) {
		a := c.do("GET", "/console/session", nil, false)
		var info struct{ Brand, CSRFToken string }
		if a.status != 200 || json.Unmarshal(a.body, &info) != nil || info.Brand != "acme" || info.CSRFToken != c.csrf {
			t.Fatalf("GET session %d %s", a.status, a.body)
		}
	})
	t.Run("reads with the cookie", func(t *testing.T) {
		wantProblem(t, c.do("GET", "/cloudapi/v2/mail/dkim/acme", nil, false), 404, "NO_DKIM_ENTRIES")
		wantProblem(t, c.do("GET", "/cloudapi/v2/mail/dkim/beta", nil, false), 403, "FORBIDDEN")
	})
	t.Run("a change without the CSRF token", func(t *testing.T) {
		wantProblem(t, c.do("PUT", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", nil, false), 403, "CSRF_TOKEN_INVALID")
		c2 := *c
		c2.csrf = "forged"
		wantProblem(t, c2.do("PUT", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", nil, true), 403, "CSRF_TOKEN_INVALID")
		if _, err := st.store.Domain(context.Background(), "spamtrap.dk"); err == nil {
			t.Error("the PUT without the token created the domain")
		}
	})
	t.Run("a change with it", func(t *testing.T) {
		a := c.do("PUT", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", nil, true)
		if a.status != 201 {
			t.Fatalf("PUT %d %s", a.status, a.body)
		}
		recs, err := st.store.Audit(context.Background(), keystore.AuditFilter{Domain: "spamtrap.dk", Limit: 1})
		if err != nil || len(recs) != 1 || recs[0].Actor != "brand:acme" || recs[0].RequestID != a.header.Get("X-Request-Id") {
			t.Errorf("audit %+v %v: the console acts as the brand, through the API", recs, err)
		}
		wantProblem(t, c.do("DELETE", "/cloudapi/v2/mail/dkim/beta/beta.dk", nil, true), 403, "FORBIDDEN")
	})
	t.Run("Basic credentials win over the cookie", func(t *testing.T) {
		req, _ := http.NewRequest("GET", st.srv.URL+"/cloudapi/v2/mail/dkim/beta", nil)
		req.SetBasicAuth("beta", st.secrets["beta"])
		resp, err := c.http.Do(req) // sends acme's cookie too
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 { // beta has no domains: NO_DKIM_ENTRIES, as beta
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("sign out", func(t *testing.T) {
		wantProblem(t, c.do("DELETE", "/console/session", nil, false), 403, "CSRF_TOKEN_INVALID")
		a := c.do("DELETE", "/console/session", nil, true)
		if a.status != 204 || c.http.Jar.(*jar).get(console.CookieName) != nil {
			t.Fatalf("sign-out %d, cookie %v", a.status, c.http.Jar.(*jar).get(console.CookieName))
		}
		a = c.do("GET", "/cloudapi/v2/mail/dkim/acme", nil, true)
		wantProblem(t, a, 401, "SESSION_REQUIRED")
		if ch := a.header.Get("WWW-Authenticate"); strings.HasPrefix(ch, "Basic") {
			t.Errorf("WWW-Authenticate %q to the console's script", ch)
		}
	})
}

func TestSessionEnds(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	st := newStack(t, stackOptions{now: clock})
	st.brand("acme", "spamtrap.dk")
	st.brand("beta")

	t.Run("expiry", func(t *testing.T) {
		c := st.client(t)
		c.signIn("acme", st.secrets["acme"])
		mu.Lock()
		now = now.Add(12*time.Hour - time.Second)
		mu.Unlock()
		if a := c.do("GET", "/console/session", nil, false); a.status != 200 {
			t.Fatalf("session before its end: %d", a.status)
		}
		mu.Lock()
		now = now.Add(2 * time.Second)
		mu.Unlock()
		wantProblem(t, c.do("GET", "/cloudapi/v2/mail/dkim/acme", nil, false), 401, "SESSION_INVALID")
	})
	t.Run("forged", func(t *testing.T) {
		c := st.client(t)
		c.signIn("beta", st.secrets["beta"])
		j := c.http.Jar.(*jar)
		v := j.get(console.CookieName).Value
		// beta's MAC under acme's name.
		forged := strings.Replace(v, "v1.beta.", "v1.acme.", 1)
		j.SetCookies(nil, []*http.Cookie{{Name: console.CookieName, Value: forged}})
		wantProblem(t, c.do("GET", "/cloudapi/v2/mail/dkim/acme", nil, false), 401, "SESSION_INVALID")
		j.SetCookies(nil, []*http.Cookie{{Name: console.CookieName, Value: "garbage"}})
		wantProblem(t, c.do("GET", "/console/session", nil, false), 401, "SESSION_INVALID")
	})
	t.Run("secret rotated", func(t *testing.T) {
		c := st.client(t)
		c.signIn("acme", st.secrets["acme"])
		if _, err := st.svc.RotateSecret(context.Background(), "acme", provision.Actor{Name: "operator"}); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, c.do("GET", "/cloudapi/v2/mail/dkim/acme", nil, false), 401, "SESSION_INVALID")
		// Sign-out still clears the cookie of a session that has ended.
		if a := c.do("DELETE", "/console/session", nil, true); a.status != 204 {
			t.Errorf("sign-out of an ended session: %d", a.status)
		}
	})
}

// TestSignInThrottled: failed sign-ins count against the API's throttle,
// and the API's lockout holds for the console.
func TestSignInThrottled(t *testing.T) {
	t.Parallel()
	st := newStack(t, stackOptions{fails: 3})
	st.brand("acme")
	c := st.client(t)
	for range 3 {
		wantProblem(t, c.signIn("acme", "wrong"), 401, "UNAUTHORIZED")
	}
	a := c.signIn("acme", st.secrets["acme"])
	wantProblem(t, a, 429, "TOO_MANY_REQUESTS")
	if a.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	req, _ := http.NewRequest("GET", st.srv.URL+"/cloudapi/v2/mail/dkim/acme", nil)
	req.SetBasicAuth("acme", st.secrets["acme"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Errorf("the API after failed console sign-ins: %d, want the same lockout (429)", resp.StatusCode)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	t.Parallel()
	st := newStack(t, stackOptions{tls: true})
	st.brand("acme")
	c := st.client(t)
	if a := c.signIn("acme", st.secrets["acme"]); a.status != 200 {
		t.Fatalf("sign-in %d %s", a.status, a.body)
	}
	if ck := c.http.Jar.(*jar).get(console.CookieName); ck == nil || !ck.Secure {
		t.Errorf("cookie %+v over TLS is not Secure", ck)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	st := newStack(t, stackOptions{})
	c := st.client(t)
	for _, tc := range []struct {
		path, ctype string
	}{
		{"/console/", "text/html; charset=utf-8"},
		{"/console/app.js", "text/javascript; charset=utf-8"},
		{"/console/style.css", "text/css; charset=utf-8"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			a := c.do("GET", tc.path, nil, false)
			if a.status != 200 || a.header.Get("Content-Type") != tc.ctype || len(a.body) == 0 {
				t.Fatalf("%d %q, %d bytes", a.status, a.header.Get("Content-Type"), len(a.body))
			}
			if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if a.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no nosniff")
			}
			req, _ := http.NewRequest("GET", st.srv.URL+tc.path, nil)
			req.Header.Set("If-None-Match", a.header.Get("ETag"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 304 {
				t.Errorf("revalidation %d, want 304", resp.StatusCode)
			}
			if h := c.do("HEAD", tc.path, nil, false); h.status != 200 || len(h.body) != 0 {
				t.Errorf("HEAD %d, %d bytes", h.status, len(h.body))
			}
		})
	}
	t.Run("no slash", func(t *testing.T) {
		a := c.do("GET", "/console", nil, false)
		if a.status != 301 || a.header.Get("Location") != "/console/" {
			t.Errorf("%d to %q", a.status, a.header.Get("Location"))
		}
	})
	t.Run("unknown file", func(t *testing.T) {
		wantProblem(t, c.do("GET", "/console/secret.txt", nil, false), 404, "NOT_FOUND")
		wantProblem(t, c.do("GET", "/console/../openapi.json/x", nil, false), 404, "NOT_FOUND")
	})
	t.Run("wrong method", func(t *testing.T) {
		a := c.do("PUT", "/console/session", nil, false)
		wantProblem(t, a, 405, "METHOD_NOT_ALLOWED")
		if got := a.header.Get("Allow"); got != "GET, POST, DELETE" {
			t.Errorf("Allow %q", got)
		}
	})
	t.Run("nothing fetched from elsewhere", func(t *testing.T) {
		for _, f := range []string{"/console/", "/console/app.js", "/console/style.css"} {
			body := string(c.do("GET", f, nil, false).body)
			for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
				if strings.Contains(body, bad) {
					t.Errorf("%s refers to %q", f, bad)
				}
			}
		}
	})
}
