package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestHeadWhereGet sends HEAD to every GET route, brand and admin, and
// compares it with the GET: same status, same header fields (the request id
// aside), no body.
func TestHeadWhereGet(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	withRotation(t, e)
	e.brand("acme", "spamtrap.dk")
	wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), http.StatusCreated)
	fill := strings.NewReplacer("{brand}", "acme", "{domain}", "spamtrap.dk", "{selector}", "selector1")
	var gets []string
	err := chi.Walk(e.srv.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if method == http.MethodGet {
			gets = append(gets, route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(gets) < 9 {
		t.Fatalf("only %d GET routes", len(gets))
	}
	paths := []string{dkimPath + "/acme/nope.dk", dkimPath + "/acme/spamtrap.dk/selector9", "/no/such/route"}
	for _, route := range gets {
		paths = append(paths, fill.Replace(route))
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			mk := func(method string) req {
				if strings.HasPrefix(path, AdminBase) {
					return req{method: method, path: path, bearer: testOperator}
				}
				return e.as("acme", method, path)
			}
			get, head := e.do(mk("GET")), e.do(mk("HEAD"))
			if head.Code != get.Code {
				t.Errorf("HEAD %d, GET %d", head.Code, get.Code)
			}
			if head.Body.Len() != 0 {
				t.Errorf("HEAD has a body: %q", head.Body.String())
			}
			for _, h := range []http.Header{get.Header(), head.Header()} {
				h.Del("X-Request-Id")
			}
			for k := range get.Header() {
				if get.Header().Get(k) != head.Header().Get(k) {
					t.Errorf("%s: GET %q, HEAD %q", k, get.Header().Get(k), head.Header().Get(k))
				}
			}
			for k := range head.Header() {
				if _, ok := get.Header()[k]; !ok {
					t.Errorf("HEAD has %s, GET not", k)
				}
			}
			if get.Header().Get("Content-Length") == "" {
				t.Error("no Content-Length")
			}
		})
	}
	t.Run("without credentials", func(t *testing.T) {
		w := e.do(req{method: "HEAD", path: dkimPath + "/acme"})
		if w.Code != 401 || w.Body.Len() != 0 || w.Header().Get("Www-Authenticate") == "" {
			t.Errorf("%d %v body %q", w.Code, w.Header(), w.Body.String())
		}
	})
}

// TestLabelClashWording: a clash with the brand's own domain names it; a
// clash with another brand's domain only says the label is taken.
func TestLabelClashWording(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme", "a-b.dk", "a.b.dk", "c.d.dk")
	e.brand("zeta", "c-d.dk")
	wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/a-b.dk")), http.StatusCreated)
	wantStatus(t, e.do(e.as("zeta", "PUT", dkimPath+"/zeta/c-d.dk")), http.StatusCreated)

	w := e.do(e.as("acme", "PUT", dkimPath+"/acme/a.b.dk"))
	wantError(t, w, 409, "LABEL_CLASH", "a-b.dk")

	before := takeSnapshot(t, store)
	w = e.do(e.as("acme", "PUT", dkimPath+"/acme/c.d.dk"))
	wantError(t, w, 409, "LABEL_CLASH", "taken")
	if strings.Contains(w.Body.String(), "c-d.dk") {
		t.Errorf("the answer names another brand's domain: %s", w.Body.String())
	}
	unchanged(t, store, before)
}
