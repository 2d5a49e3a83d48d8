// Package httpapi is dkimd's HTTP face: the brand REST API under
// /cloudapi/v2/mail/dkim (HTTP Basic auth per brand), the admin API under
// /admin/v1 (operator bearer token) and the OpenAPI document that describes
// both. It authenticates, validates and translates; every change goes through
// package provision (or the Rotator), which owns the rules and writes the
// audit log. It never sees or returns private key material.
package httpapi

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"dkimd/internal/console"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

// BrandBase is the base path of the brand API.
const BrandBase = "/cloudapi/v2/mail/dkim"

// AdminBase is the base path of the admin API.
const AdminBase = "/admin/v1"

// maxBody bounds every request body; the largest legitimate one is a few
// dozen bytes.
const maxBody = 64 << 10

// Rotator is what the brand API needs from the rotation service.
type Rotator interface {
	RequestRotation(ctx context.Context, brand, domain string, emergency bool, actor provision.Actor) (keystore.Domain, []keystore.Key, error)
	CheckDNS(ctx context.Context, brand, domain string, actor provision.Actor) (rotation.DNSReport, error)
}

// Options configure a Server. Store, Service and Log are required.
type Options struct {
	Store   keystore.Store
	Service *provision.Service
	// Rotator serves rotate and dns; nil answers them 503.
	Rotator Rotator
	// Console, when set, is mounted at /console/ and its sessions are
	// accepted by the brand API (console.go).
	Console *console.Console
	// OperatorToken guards the admin API; empty disables it (every call 401).
	OperatorToken string
	Log           *slog.Logger
	// Metrics, when set, counts and times every request.
	Metrics *Metrics
	// Now is the clock for throttling and the credential cache; nil is time.Now.
	Now func() time.Time
	// CredentialTTL is how long a verified brand secret is trusted without
	// paying argon2 again; 0 means 60 s.
	CredentialTTL time.Duration
	// MaxFailures failed logins for one brand from one source prefix (/24
	// IPv4, /56 IPv6) within FailureWindow lock that source out of that
	// brand for Lockout; SourceMaxFailures failures from one source prefix,
	// whatever the brands, lock it out of every brand. A brand is never
	// locked out as a whole. Zeros mean 10, 3×MaxFailures, 1 min and 1 min.
	MaxFailures       int
	SourceMaxFailures int
	FailureWindow     time.Duration
	Lockout           time.Duration
	// HashWait bounds how long a login waits for one of the GOMAXPROCS
	// password-hashing slots before it is answered 503 with Retry-After;
	// 0 means 1 s. One source prefix holds or waits for at most half the
	// slots (at least one); a login beyond that share gets the 503 at once.
	HashWait time.Duration
}

// Server is the HTTP handler of the brand and admin APIs.
type Server struct {
	store       keystore.Store
	svc         *provision.Service
	rot         atomic.Pointer[Rotator]
	console     *console.Console
	zone        string
	log         *slog.Logger
	metrics     *Metrics
	now         func() time.Time
	operatorSum [sha256.Size]byte
	operatorSet bool
	creds       *credCache
	argonSlots  chan struct{}
	hashShares  *shares // each source prefix's part of argonSlots
	hashWait    time.Duration
	pairs       *throttle // failures per source prefix and brand, and the operator's per prefix
	sources     *throttle // failures per source prefix, whatever the brand
	router      chi.Router
}

// New builds the handler.
func New(o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CredentialTTL == 0 {
		o.CredentialTTL = time.Minute
	}
	if o.MaxFailures == 0 {
		o.MaxFailures = 10
	}
	if o.SourceMaxFailures == 0 {
		o.SourceMaxFailures = 3 * o.MaxFailures
	}
	if o.HashWait == 0 {
		o.HashWait = time.Second
	}
	if o.FailureWindow == 0 {
		o.FailureWindow = time.Minute
	}
	if o.Lockout == 0 {
		o.Lockout = time.Minute
	}
	s := &Server{
		store: o.Store, svc: o.Service, zone: o.Service.Zone, log: o.Log,
		metrics: o.Metrics, now: o.Now, console: o.Console,
		creds:      newCredCache(o.CredentialTTL, o.Now),
		argonSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
		hashShares: newShares(runtime.GOMAXPROCS(0)),
		hashWait:   o.HashWait,
		pairs:      newThrottle(o.MaxFailures, o.FailureWindow, o.Lockout, o.Now),
		sources:    newThrottle(o.SourceMaxFailures, o.FailureWindow, o.Lockout, o.Now),
	}
	if o.OperatorToken != "" {
		s.operatorSum, s.operatorSet = sha256.Sum256([]byte(o.OperatorToken)), true
	}
	s.SetRotator(o.Rotator)
	s.router = s.routes()
	return s
}

// SetRotator plugs in (or, with nil, removes) the rotation service. It is
// safe while requests are served, since the rotation loop may start after
// the API listener.
func (s *Server) SetRotator(r Rotator) {
	if r == nil {
		s.rot.Store(nil)
		return
	}
	s.rot.Store(&r)
}

func (s *Server) rotator() Rotator {
	if r := s.rot.Load(); r != nil {
		return *r
	}
	return nil
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.router.ServeHTTP(w, r)
}

// Router is the chi router, for tests that walk the routes.
func (s *Server) Router() chi.Router { return s.router }

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.observe, s.recoverer, noHeadBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		infoFrom(r.Context()).unmatched = true
		s.fail(w, r, errRouteNotFound)
	})
	r.MethodNotAllowed(s.methodNotAllowed)

	getAndHead(r, "/openapi.json", s.openAPI)
	s.mountConsole(r)

	r.Route(BrandBase, func(r chi.Router) {
		r.Use(s.brandAuthOrSession)
		getAndHead(r, "/{brand}", s.listDomains)
		getAndHead(r, "/{brand}/maildomains", s.listBrandMaildomains)
		getAndHead(r, "/{brand}/{domain}", s.getDomain)
		r.Put("/{brand}/{domain}", s.putDomain)
		r.Delete("/{brand}/{domain}", s.deleteDomain)
		r.Post("/{brand}/{domain}/rotate", s.rotate)
		getAndHead(r, "/{brand}/{domain}/dns", s.checkDNS)
		getAndHead(r, "/{brand}/{domain}/audit", s.domainAudit)
		getAndHead(r, "/{brand}/{domain}/{selector}", s.getSelector)
	})

	r.Route(AdminBase, func(r chi.Router) {
		r.Use(s.operatorAuth)
		getAndHead(r, "/brands", s.adminListBrands)
		r.Post("/brands", s.adminCreateBrand)
		getAndHead(r, "/brands/{brand}", s.adminGetBrand)
		r.Delete("/brands/{brand}", s.adminDeleteBrand)
		r.Post("/brands/{brand}/rotate-secret", s.adminRotateSecret)
		getAndHead(r, "/brands/{brand}/maildomains", s.adminListMaildomains)
		r.Put("/brands/{brand}/maildomains/{domain}", s.adminAddMaildomain)
		r.Delete("/brands/{brand}/maildomains/{domain}", s.adminRemoveMaildomain)
		getAndHead(r, "/audit", s.adminAudit)
	})
	return r
}

// methodNotAllowed answers 405 with the Allow header chi leaves to custom
// handlers.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	infoFrom(r.Context()).unmatched = true
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete} {
		if s.router.Match(chi.NewRouteContext(), m, path) {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
	}
	s.fail(w, r, errMethodNotAllowed)
}

// getAndHead routes GET and HEAD of pattern to h: HEAD is answered wherever
// GET is (docs/api.md), with the same status and header fields
// (Content-Length included, RFC 9110 §9.3.2); noHeadBody drops the body.
func getAndHead(r chi.Router, pattern string, h http.HandlerFunc) {
	r.Get(pattern, h)
	r.Head(pattern, h)
}

// noHeadBody drops the body of every HEAD answer, errors included.
// net/http's server drops it too; doing it here keeps every ResponseWriter
// (a test's recorder, a middleware's wrapper) from ever carrying one.
func noHeadBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w = headWriter{w}
		}
		next.ServeHTTP(w, r)
	})
}

type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(p []byte) (int, error) { return len(p), nil }

// Unwrap lets http.ResponseController reach the connection's writer.
func (w headWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
