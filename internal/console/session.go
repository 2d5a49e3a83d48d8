package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// CookieName is the session cookie. Its Path is "/" because the page's
// script calls the brand API under /cloudapi/ with it.
const CookieName = "dkimd_console"

// CSRFHeader carries the session's CSRF token on every request the page's
// script makes; a change without it is refused.
const CSRFHeader = "X-CSRF-Token"

// The session's failures. Package httpapi answers them in its error
// envelope (401 for the first two, 403 for the third).
var (
	// ErrNoSession: the request carries no session cookie.
	ErrNoSession = errors.New("console: sign in first")
	// ErrBadSession: the cookie is malformed, forged, expired, or its
	// brand's secret changed or the brand is gone since it was issued.
	ErrBadSession = errors.New("console: session expired or invalid, sign in again")
	// ErrCSRF: a change without the session's CSRF token.
	ErrCSRF = errors.New("console: missing or wrong CSRF token, reload the console")
)

// A session is stateless, so that any replica accepts what another one
// issued and nothing is stored:
//
//	v1.<brand>.<expiry, Unix seconds>.<MAC>
//
// MAC is HMAC-SHA256 under the console key over the brand, the expiry and
// the brand's current secret hash. The hash has a fresh random salt at each
// rotation of the secret, so rotating it ends every session of the brand on
// every replica at once, and deleting the brand ends them too. See
// docs/decisions.md ("Console sessions").
const sessionVersion = "v1"

func (c *Console) mac(label, msg string) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (c *Console) sessionMAC(brand string, expiry int64, secretHash string) []byte {
	return c.mac("dkimd console session", brand+"\x00"+strconv.FormatInt(expiry, 10)+"\x00"+secretHash)
}

// csrfToken is bound to one session value: a token read from one session
// is worth nothing with another, and the page learns it only from a
// same-origin response.
func (c *Console) csrfToken(value string) string {
	return base64.RawURLEncoding.EncodeToString(c.mac("dkimd console csrf", value))
}

// issue makes the cookie value of a new session of b.
func (c *Console) issue(b keystore.Brand) (value string, expires time.Time) {
	expires = c.now().Add(c.ttl).Truncate(time.Second)
	exp := expires.Unix()
	mac := base64.RawURLEncoding.EncodeToString(c.sessionMAC(b.Name, exp, b.SecretHash))
	return sessionVersion + "." + b.Name + "." + strconv.FormatInt(exp, 10) + "." + mac, expires
}

// session is a verified session.
type session struct {
	brand   string
	value   string
	expires time.Time
}

// verify checks r's session cookie against the brand's current secret. A
// store failure is returned as it is, so that the API answers 503 rather
// than signing the brand out.
func (c *Console) verify(r *http.Request) (session, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return session{}, ErrNoSession
	}
	parts := strings.Split(ck.Value, ".")
	if len(parts) != 4 || parts[0] != sessionVersion || domainname.ValidBrand(parts[1]) != nil {
		return session{}, ErrBadSession
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || !c.now().Before(time.Unix(exp, 0)) {
		return session{}, ErrBadSession
	}
	got, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil {
		return session{}, ErrBadSession
	}
	b, err := c.brands.Brand(r.Context(), parts[1])
	if errors.Is(err, keystore.ErrNotFound) {
		return session{}, ErrBadSession
	}
	if err != nil {
		return session{}, err
	}
	if !hmac.Equal(got, c.sessionMAC(b.Name, exp, b.SecretHash)) {
		return session{}, ErrBadSession
	}
	return session{brand: b.Name, value: ck.Value, expires: time.Unix(exp, 0).UTC()}, nil
}

// safeMethod is a method that changes nothing (RFC 9110 §9.2.1), the only
// ones allowed without the CSRF token.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// Session returns the brand whose valid console session r carries: the
// brand API accepts it in place of Basic credentials. A change (any method
// but GET, HEAD and OPTIONS) must also carry the session's CSRF token in
// CSRFHeader; SameSite=Strict on the cookie is the second layer.
func (c *Console) Session(r *http.Request) (string, error) {
	s, err := c.verify(r)
	if err != nil {
		return "", err
	}
	if !safeMethod(r.Method) && !hmac.Equal([]byte(r.Header.Get(CSRFHeader)), []byte(c.csrfToken(s.value))) {
		return "", ErrCSRF
	}
	return s.brand, nil
}

// Carries says whether r comes from the console's script or holds its
// cookie: such a request is authenticated by its session, never by a
// Basic challenge, which would make the browser pop up its own login box.
func Carries(r *http.Request) bool {
	if r.Header.Get(CSRFHeader) != "" {
		return true
	}
	_, err := r.Cookie(CookieName)
	return err == nil
}

// setCookie sets (or, with an empty value, clears) the session cookie.
// Secure is set when the request came over TLS. Behind a TLS-terminating
// proxy it is not, since dkimd trusts no X-Forwarded-Proto (nor
// X-Forwarded-For, see httpapi's clientIP): such a proxy should serve
// HTTPS only (docs/operator-guide.md says the API belongs behind one).
func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	ck := &http.Cookie{
		Name: CookieName, Value: value, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
	if value == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
		ck.MaxAge = max(1, int(expires.Sub(c.now()).Seconds()))
	}
	http.SetCookie(w, ck)
}
