package httpapi

import (
	"net/http/httptest"
	"slices"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestDomainAudit(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	// shared.example was beta's first, then acme's: acme must not see
	// beta's time with it.
	e.brand("beta", "shared.example")
	e.brand("acme", "shared.example", "other.example")
	wantStatus(t, e.do(e.as("beta", "PUT", dkimPath+"/beta/shared.example")), 201)
	wantStatus(t, e.do(e.as("beta", "DELETE", dkimPath+"/beta/shared.example")), 204)
	put := e.do(e.as("acme", "PUT", dkimPath+"/acme/shared.example"))
	wantStatus(t, put, 201)
	wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/other.example")), 201)
	before := takeSnapshot(t, store)

	actions := func(es []auditEntry) (out []string) {
		for _, a := range es {
			out = append(out, a.Action+" "+a.Selector)
		}
		return out
	}
	t.Run("newest first, this brand only", func(t *testing.T) {
		w := e.do(e.as("acme", "GET", dkimPath+"/acme/shared.example/audit"))
		wantStatus(t, w, 200)
		got := decode[[]auditEntry](t, w)
		want := []string{"domain.create ", "key.create selector2", "key.create selector1", "maildomain.add "}
		if !slices.Equal(actions(got), want) {
			t.Fatalf("actions %v, want %v", actions(got), want)
		}
		for _, a := range got {
			if a.Brand != "acme" || a.Domain != "shared.example" {
				t.Errorf("record %+v", a)
			}
		}
		if got[0].Actor != "brand:acme" || got[0].RequestID != put.Header().Get("X-Request-Id") {
			t.Errorf("newest record %+v", got[0])
		}
	})
	t.Run("by pages", func(t *testing.T) {
		var got []string
		e.followLinks(t, "acme", dkimPath+"/acme/shared.example/audit?limit=3", 4, func(w *httptest.ResponseRecorder) {
			got = append(got, actions(decode[[]auditEntry](t, w))...)
		})
		if len(got) != 4 {
			t.Errorf("pages gave %v", got)
		}
	})
	t.Run("a deleted domain keeps its history", func(t *testing.T) {
		w := e.do(e.as("beta", "GET", dkimPath+"/beta/shared.example/audit"))
		wantStatus(t, w, 200)
		if got := actions(decode[[]auditEntry](t, w)); len(got) < 6 || got[0] != "domain.delete " {
			t.Errorf("beta's history %v", got)
		}
	})
	t.Run("a domain the brand never held", func(t *testing.T) {
		e.brand("gamma")
		before = takeSnapshot(t, store)
		wantError(t, e.do(e.as("gamma", "GET", dkimPath+"/gamma/shared.example/audit")), 404, "DOMAIN_NOT_FOUND", "domain not found")
	})
	t.Run("another brand's path", func(t *testing.T) {
		wantError(t, e.do(e.as("beta", "GET", dkimPath+"/acme/shared.example/audit")), 403, "FORBIDDEN", "")
	})
	t.Run("invalid domain", func(t *testing.T) {
		wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/nodots/audit")), 400, "INVALID_DOMAIN", "")
	})
	t.Run("bad before", func(t *testing.T) {
		wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/shared.example/audit?before=x")), 400, "INVALID_PARAMETER", "before")
	})
	unchanged(t, store, before)
}
