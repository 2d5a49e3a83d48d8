package httpapi

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// TestAdminLifecycle provisions a brand the way an operator does, uses it
// from the brand API, and reads the audit trail of it all.
func TestAdminLifecycle(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		var secret string
		t.Run("create brand", func(t *testing.T) {
			w := e.admin("POST", "/brands", `{"name":"acme"}`)
			wantStatus(t, w, 201)
			got := decode[brandSecret](t, w)
			if got.Name != "acme" || len(got.Secret) < 40 || w.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("created %+v, Cache-Control %q", got, w.Header().Get("Cache-Control"))
			}
			secret = got.Secret
			b, err := store.Brand(t.Context(), "acme")
			if err != nil || strings.Contains(b.SecretHash, secret) || !strings.HasPrefix(b.SecretHash, "$argon2id$") {
				t.Errorf("stored hash %q, %v", b.SecretHash, err)
			}
		})
		for _, tc := range []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			{"duplicate brand", "POST", "/brands", `{"name":"acme"}`, 409, "BRAND_EXISTS"},
			{"bad brand name", "POST", "/brands", `{"name":"Acme!"}`, 400, "INVALID_BRAND"},
			{"no body", "POST", "/brands", ``, 400, "INVALID_BODY"},
			{"unknown field", "POST", "/brands", `{"name":"x","secret":"y"}`, 400, "INVALID_BODY"},
			{"oversized", "POST", "/brands", `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "BODY_TOO_LARGE"},
			{"unknown brand", "GET", "/brands/nobody", ``, 404, "BRAND_NOT_FOUND"},
			{"maildomain of unknown brand", "PUT", "/brands/nobody/maildomains/a.dk", ``, 404, "BRAND_NOT_FOUND"},
			{"bad maildomain", "PUT", "/brands/acme/maildomains/a..dk", ``, 400, "INVALID_DOMAIN"},
			{"remove missing maildomain", "DELETE", "/brands/acme/maildomains/a.dk", ``, 404, "MAILDOMAIN_NOT_FOUND"},
			{"rotate unknown", "POST", "/brands/nobody/rotate-secret", ``, 404, "BRAND_NOT_FOUND"},
			{"delete unknown", "DELETE", "/brands/nobody", ``, 404, "BRAND_NOT_FOUND"},
			{"bad audit page", "GET", "/audit?before=x", ``, 400, "INVALID_PARAMETER"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := takeSnapshot(t, store)
				wantError(t, e.admin(tc.method, tc.path, tc.body), tc.status, tc.code, "")
				unchanged(t, store, before)
			})
		}
		brandReq := func(method, path string) req {
			return req{method: method, path: dkimPath + path, user: "acme", pass: secret}
		}
		t.Run("maildomains", func(t *testing.T) {
			wantError(t, e.do(brandReq("PUT", "/acme/spamtrap.dk")), 404, "MAILDOMAIN_NOT_PROVISIONED", "")
			for range 2 { // idempotent
				wantStatus(t, e.admin("PUT", "/brands/acme/maildomains/SpamTrap.dk", ""), 204)
			}
			wantStatus(t, e.admin("PUT", "/brands/acme/maildomains/b%C3%BCcher.example", ""), 204)
			w := e.admin("GET", "/brands/acme/maildomains", "")
			wantStatus(t, w, 200)
			if got := decode[[]string](t, w); !slices.Equal(got, []string{"spamtrap.dk", "xn--bcher-kva.example"}) {
				t.Errorf("maildomains %v", got)
			}
			wantStatus(t, e.admin("DELETE", "/brands/acme/maildomains/b%C3%BCcher.example", ""), 204)
		})
		t.Run("brand uses its secret", func(t *testing.T) {
			wantStatus(t, e.do(brandReq("PUT", "/acme/spamtrap.dk")), 201)
		})
		t.Run("list and show", func(t *testing.T) {
			w := e.admin("GET", "/brands", "")
			wantStatus(t, w, 200)
			got := decode[[]brandEntry](t, w)
			if len(got) != 1 || got[0].Name != "acme" || got[0].Domains != 1 || !slices.Equal(got[0].Maildomains, []string{"spamtrap.dk"}) {
				t.Errorf("brands %+v", got)
			}
			if strings.Contains(w.Body.String(), "argon2") {
				t.Error("the list shows secret hashes")
			}
			wantStatus(t, e.admin("GET", "/brands/acme", ""), 200)
		})
		t.Run("delete refused while domains remain", func(t *testing.T) {
			before := takeSnapshot(t, store)
			wantError(t, e.admin("DELETE", "/brands/acme", ""), 409, "BRAND_HAS_DOMAINS", "delete them first")
			unchanged(t, store, before)
		})
		t.Run("rotate secret", func(t *testing.T) {
			w := e.admin("POST", "/brands/acme/rotate-secret", "")
			wantStatus(t, w, 200)
			fresh := decode[brandSecret](t, w).Secret
			if fresh == secret || fresh == "" {
				t.Fatalf("new secret %q", fresh)
			}
			// The old secret was cached by the PUT above; the rotation must
			// drop it at once.
			wantError(t, e.do(brandReq("GET", "/acme")), 401, "UNAUTHORIZED", "")
			secret = fresh
			wantStatus(t, e.do(brandReq("GET", "/acme")), 200)
		})
		t.Run("delete brand", func(t *testing.T) {
			wantStatus(t, e.do(brandReq("DELETE", "/acme/spamtrap.dk")), 204)
			wantStatus(t, e.admin("DELETE", "/brands/acme", ""), 204)
			wantError(t, e.do(brandReq("GET", "/acme")), 401, "UNAUTHORIZED", "")
			wantError(t, e.admin("GET", "/brands/acme", ""), 404, "BRAND_NOT_FOUND", "")
		})
		t.Run("audit", func(t *testing.T) {
			w := e.admin("GET", "/audit?brand=acme&limit=1000", "")
			wantStatus(t, w, 200)
			recs := decode[[]auditEntry](t, w)
			var actions []string
			for _, r := range recs {
				if r.RequestID == "" || r.Brand != "acme" {
					t.Errorf("record %+v", r)
				}
				want := "operator"
				if strings.HasPrefix(r.Action, "domain.") || r.Domain == "spamtrap.dk" && strings.HasPrefix(r.Action, "key.") {
					want = "brand:acme"
				}
				if r.Actor != want {
					t.Errorf("%s by %q, want %q", r.Action, r.Actor, want)
				}
				actions = append(actions, r.Action)
			}
			slices.Reverse(actions)
			want := []string{"key.create", "key.create", "brand.create", "maildomain.add", "maildomain.add", "maildomain.remove",
				"key.create", "key.create", "domain.create", "brand.rotate-secret", "key.destroy", "key.destroy", "domain.delete", "brand.delete"}
			if !slices.Equal(actions, want) {
				t.Errorf("audit actions\n%v\nwant\n%v", actions, want)
			}

			// Page through by the Link header, filtered by domain.
			var paged []int64
			path := AdminBase + "/audit?domain=spamtrap.dk&limit=2"
			for path != "" {
				w := e.do(req{method: "GET", path: path, bearer: testOperator})
				wantStatus(t, w, 200)
				for _, r := range decode[[]auditEntry](t, w) {
					if r.Domain != "spamtrap.dk" {
						t.Errorf("filter let through %+v", r)
					}
					paged = append(paged, r.ID)
				}
				path = ""
				if m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(w.Header().Get("Link")); m != nil {
					path = m[1]
				}
			}
			if len(paged) != 7 || !slices.IsSortedFunc(paged, func(a, b int64) int { return int(b - a) }) {
				t.Errorf("paged ids %v, want 7 newest first", paged)
			}
		})
	})
}
