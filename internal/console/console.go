// Package console is the brand console: a browser front end under /console/
// on the API listener, where a brand's staff do what the REST API does. It
// owns the page's files (embedded in the binary; plain HTML, CSS and
// JavaScript, nothing fetched from elsewhere), the sign-in and sign-out
// endpoints and the stateless session cookie.
//
// It must not become a second way into the store: the page's script calls
// the brand REST API itself, which accepts a console session in place of
// Basic credentials (package httpapi asks Session), so every rule, error and
// audit record is the API's. The console only reads a brand's secret hash,
// to bind its sessions to it.
package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"dkimd/internal/keystore"
)

// Base is where the API router mounts the console.
const Base = "/console"

// DefaultTTL is how long a session lasts: a working day, after which the
// brand signs in again.
const DefaultTTL = 12 * time.Hour

// KeyPurpose is the HKDF label under which serve derives the session key
// from the KEK (sealbox.Box.DeriveKey).
const KeyPurpose = "dkimd console session v1"

// Brands is the one read the console makes of the store.
type Brands interface {
	Brand(ctx context.Context, name string) (keystore.Brand, error)
}

// Options configure a Console. Brands and Key are required.
type Options struct {
	Brands Brands
	// Key signs sessions; at least 32 bytes, the same on every replica.
	Key []byte
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// TTL is a session's lifetime; 0 is DefaultTTL.
	TTL time.Duration
}

// Console serves the console and verifies its sessions.
type Console struct {
	brands Brands
	key    []byte
	now    func() time.Time
	ttl    time.Duration
	files  map[string]file
}

// New builds a Console.
func New(o Options) (*Console, error) {
	if o.Brands == nil {
		return nil, errors.New("console: no brand store")
	}
	if len(o.Key) < 32 {
		return nil, fmt.Errorf("console: session key is %d bytes, want at least 32", len(o.Key))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	files, err := loadFiles()
	if err != nil {
		return nil, err
	}
	return &Console{brands: o.Brands, key: bytes.Clone(o.Key), now: o.Now, ttl: o.TTL, files: files}, nil
}

// API is what the console needs from the brand API it is mounted in.
type API interface {
	// CheckSecret checks brand and secret exactly as the brand API checks
	// Basic credentials: the same cache, throttling of failures and bound
	// on concurrent hashing. When they fail it has answered w in the API's
	// error envelope, and it returns false.
	CheckSecret(w http.ResponseWriter, r *http.Request, brand, secret string) bool
	// Fail answers err in the API's error envelope; it knows ErrNoSession,
	// ErrBadSession, ErrCSRF and *Error.
	Fail(w http.ResponseWriter, r *http.Request, err error)
}

// Error is a failure of the console's own endpoints.
type Error struct {
	Status      int
	Code, Title string
}

func (e *Error) Error() string { return e.Title }

// Handler serves the console's files and its session endpoints, relative
// to Base.
func (c *Console) Handler(api API) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.GetHead) // HEAD is answered wherever GET is
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == Base { // relative links in the page need the slash
			http.Redirect(w, r, Base+"/", http.StatusMovedPermanently)
			return
		}
		c.serveFile(w, r, api, "index.html")
	})
	r.Get("/{file}", func(w http.ResponseWriter, r *http.Request) {
		c.serveFile(w, r, api, chi.URLParam(r, "file"))
	})
	r.Post("/session", func(w http.ResponseWriter, r *http.Request) { c.signIn(w, r, api) })
	r.Get("/session", func(w http.ResponseWriter, r *http.Request) { c.current(w, r, api) })
	r.Delete("/session", func(w http.ResponseWriter, r *http.Request) { c.signOut(w, r, api) })
	return r
}

//go:embed static
var static embed.FS

type file struct {
	body        []byte
	contentType string
	etag        string
}

func loadFiles() (map[string]file, error) {
	entries, err := static.ReadDir("static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	files := map[string]file{}
	for _, e := range entries {
		b, err := static.ReadFile(path.Join("static", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		files[e.Name()] = file{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return files, nil
}

// contentSecurityPolicy allows the console's own files and calls only:
// no inline script, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var errNoSuchFile = &Error{Status: http.StatusNotFound, Code: "NOT_FOUND", Title: "no such resource"}

func (c *Console) serveFile(w http.ResponseWriter, r *http.Request, api API, name string) {
	f, ok := c.files[name]
	if !ok {
		api.Fail(w, r, errNoSuchFile)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("ETag", f.etag)
	// Revalidated on every load, so that an upgrade is seen at once; the
	// ETag keeps that to a 304.
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}

// sessionInfo is what the page learns of its session. The cookie itself is
// HttpOnly: the script never sees it.
type sessionInfo struct {
	Brand     string    `json:"brand"`
	CSRFToken string    `json:"csrfToken"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type signInBody struct {
	Brand  string `json:"brand"`
	Secret string `json:"secret"`
}

// maxSignIn bounds the sign-in body; a brand is at most 63 octets and a
// secret 43.
const maxSignIn = 4 << 10

var (
	errSignInBody  = &Error{Status: http.StatusBadRequest, Code: "INVALID_BODY", Title: `the body must be {"brand": …, "secret": …}`}
	errSignInEmpty = &Error{Status: http.StatusBadRequest, Code: "INVALID_BODY", Title: "brand and secret are required"}
	errSignInType  = &Error{Status: http.StatusUnsupportedMediaType, Code: "UNSUPPORTED_MEDIA_TYPE", Title: "request body must be application/json"}
	errSignInSize  = &Error{Status: http.StatusRequestEntityTooLarge, Code: "BODY_TOO_LARGE", Title: "request body is too large"}
)

// signIn exchanges a brand and its secret for a session. The body must be
// JSON: a form on another site cannot send that without a CORS preflight,
// which dkimd never grants, so a sign-in cannot be forged either.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request, api API) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		api.Fail(w, r, errSignInType)
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSignIn))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		api.Fail(w, r, errSignInSize)
		return
	}
	var body signInBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err != nil || dec.Decode(&body) != nil || dec.More() {
		api.Fail(w, r, errSignInBody)
		return
	}
	if body.Brand == "" || body.Secret == "" {
		api.Fail(w, r, errSignInEmpty)
		return
	}
	if !api.CheckSecret(w, r, body.Brand, body.Secret) {
		return
	}
	b, err := c.brands.Brand(r.Context(), body.Brand)
	if err != nil { // deleted in between, or the store is away
		api.Fail(w, r, err)
		return
	}
	value, expires := c.issue(b)
	c.setCookie(w, r, value, expires)
	c.writeInfo(w, session{brand: b.Name, value: value, expires: expires})
}

// current tells a page that was reloaded which brand it serves and its
// CSRF token.
func (c *Console) current(w http.ResponseWriter, r *http.Request, api API) {
	s, err := c.verify(r)
	if err != nil {
		api.Fail(w, r, err)
		return
	}
	c.writeInfo(w, s)
}

// signOut clears the cookie. A valid session must show its CSRF token, so
// another site cannot sign a brand out.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request, api API) {
	if _, err := c.Session(r); err != nil && !errors.Is(err, ErrNoSession) && !errors.Is(err, ErrBadSession) {
		api.Fail(w, r, err)
		return
	}
	c.setCookie(w, r, "", time.Time{})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (c *Console) writeInfo(w http.ResponseWriter, s session) {
	b, err := json.Marshal(sessionInfo{Brand: s.brand, CSRFToken: c.csrfToken(s.value), ExpiresAt: s.expires.UTC()})
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}
