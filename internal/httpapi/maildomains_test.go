package httpapi

import (
	"net/http/httptest"
	"slices"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestBrandMaildomains(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme", "a.example", "b.example", "c.example", "d.example", "e.example")
	e.brand("beta", "beta.example")
	for _, d := range []string{"b.example", "d.example"} {
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/"+d)), 201)
	}
	before := takeSnapshot(t, store)

	names := func(es []maildomainEntry) (out []string) {
		for _, x := range es {
			out = append(out, x.Domain)
		}
		return out
	}
	t.Run("all", func(t *testing.T) {
		w := e.do(e.as("acme", "GET", dkimPath+"/acme/maildomains"))
		wantStatus(t, w, 200)
		got := decode[[]maildomainEntry](t, w)
		want := []maildomainEntry{{"a.example", false}, {"b.example", true}, {"c.example", false}, {"d.example", true}, {"e.example", false}}
		if !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("without keys, by pages", func(t *testing.T) {
		var got []string
		e.followLinks(t, "acme", dkimPath+"/acme/maildomains?hasKeys=false&limit=2", 4, func(w *httptest.ResponseRecorder) {
			got = append(got, names(decode[[]maildomainEntry](t, w))...)
		})
		if want := []string{"a.example", "c.example", "e.example"}; !slices.Equal(got, want) {
			t.Errorf("pages gave %v, want %v", got, want)
		}
	})
	t.Run("with keys", func(t *testing.T) {
		w := e.do(e.as("acme", "GET", dkimPath+"/acme/maildomains?hasKeys=true"))
		wantStatus(t, w, 200)
		if got := names(decode[[]maildomainEntry](t, w)); !slices.Equal(got, []string{"b.example", "d.example"}) {
			t.Errorf("got %v", got)
		}
	})
	t.Run("none", func(t *testing.T) {
		e.brand("gamma")
		w := e.do(e.as("gamma", "GET", dkimPath+"/gamma/maildomains"))
		wantStatus(t, w, 200)
		if w.Body.String() != "[]\n" {
			t.Errorf("body %q", w.Body.String())
		}
		before = takeSnapshot(t, store)
	})
	t.Run("another brand's", func(t *testing.T) {
		wantError(t, e.do(e.as("beta", "GET", dkimPath+"/acme/maildomains")), 403, "FORBIDDEN", "")
	})
	t.Run("no credentials", func(t *testing.T) {
		wantError(t, e.do(req{method: "GET", path: dkimPath + "/acme/maildomains"}), 401, "UNAUTHORIZED", "")
	})
	for _, q := range []string{"hasKeys=maybe", "limit=0"} {
		t.Run(q, func(t *testing.T) {
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/maildomains?"+q)), 400, "INVALID_PARAMETER", "")
		})
	}
	unchanged(t, store, before)
}
