package httpapi

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"dkimd/internal/console"
)

// The brand console (package console) is mounted at console.Base, and its
// session cookie is accepted by the brand API in place of Basic
// credentials: the page calls the same handlers under the same rules.

// consoleChallenge is the WWW-Authenticate of a 401 to the console's
// script. A Basic challenge there would make the browser open its own login
// box instead of letting the page show the error.
const consoleChallenge = `Session realm="dkimd console"`

var (
	errNoSession  = &problem{status: http.StatusUnauthorized, code: "SESSION_REQUIRED", title: "sign in to the console first"}
	errBadSession = &problem{status: http.StatusUnauthorized, code: "SESSION_INVALID", title: "the console session has expired or ended; sign in again"}
	errCSRF       = &problem{status: http.StatusForbidden, code: "CSRF_TOKEN_INVALID", title: "missing or wrong CSRF token; reload the console"}
)

func (s *Server) mountConsole(r chi.Router) {
	if s.console != nil {
		r.Mount(console.Base, s.console.Handler(consoleAPI{s}))
	}
}

// brandAuthOrSession is brandAuth, except that a request from the console
// (its cookie or its CSRF header, and no Authorization) is authenticated by
// its session instead, under the same rule: the brand in the path must be
// the session's.
func (s *Server) brandAuthOrSession(next http.Handler) http.Handler {
	basic := s.brandAuth(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.console == nil || r.Header.Get("Authorization") != "" || !console.Carries(r) {
			basic.ServeHTTP(w, r)
			return
		}
		brand, err := s.console.Session(r)
		if err != nil {
			consoleAPI{s}.Fail(w, r, err)
			return
		}
		infoFrom(r.Context()).brand = brand
		if p := pathBrand(r); p != "" && p != brand {
			s.fail(w, r, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// consoleAPI is the brand API as the console's sign-in sees it.
type consoleAPI struct{ s *Server }

// CheckSecret runs brand and secret through brandAuth itself, as Basic
// credentials on a request for the brand's own domain list, so that a
// sign-in shares the API's credential cache, failure throttling and
// argon2 bound, whatever they become.
func (a consoleAPI) CheckSecret(w http.ResponseWriter, r *http.Request, brand, secret string) bool {
	probe := r.Clone(r.Context())
	probe.URL = &url.URL{Path: BrandBase + "/" + brand}
	probe.SetBasicAuth(brand, secret)
	ok := false
	a.s.brandAuth(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ok = true })).
		ServeHTTP(challengeWriter{w}, probe)
	return ok
}

// Fail answers err in the API's envelope.
func (a consoleAPI) Fail(w http.ResponseWriter, r *http.Request, err error) {
	var ce *console.Error
	switch {
	case errors.Is(err, console.ErrNoSession):
		err = errNoSession
	case errors.Is(err, console.ErrBadSession):
		err = errBadSession
	case errors.Is(err, console.ErrCSRF):
		err = errCSRF
	case errors.As(err, &ce):
		err = &problem{status: ce.Status, code: ce.Code, title: ce.Title}
	}
	if p := toProblem(err); p.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", consoleChallenge)
	}
	a.s.fail(w, r, err)
}

// challengeWriter replaces brandAuth's Basic challenge with the console's.
type challengeWriter struct{ http.ResponseWriter }

func (c challengeWriter) WriteHeader(status int) {
	if c.Header().Get("WWW-Authenticate") != "" {
		c.Header().Set("WWW-Authenticate", consoleChallenge)
	}
	c.ResponseWriter.WriteHeader(status)
}
