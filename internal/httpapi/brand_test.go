package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

const dkimPath = BrandBase

// TestGuideWalkthrough follows the customer guide: list, check, create,
// inspect, delete, verify the deletion.
func TestGuideWalkthrough(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		e.brand("acme", "spamtrap.dk")

		t.Run("list empty", func(t *testing.T) {
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme")), 404, "NO_DKIM_ENTRIES", "No DKIM entries found")
		})
		t.Run("get before put", func(t *testing.T) {
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk")), 404, "DOMAIN_NOT_FOUND", "domain not found")
		})

		var created domainEntry
		t.Run("put creates", func(t *testing.T) {
			w := e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"))
			wantStatus(t, w, http.StatusCreated)
			created = decode[domainEntry](t, w)
			checkEntry(t, created, "acme", "spamtrap.dk", "spamtrap-dk")
			if loc := w.Header().Get("Location"); loc != dkimPath+"/acme/spamtrap.dk" {
				t.Errorf("Location %q", loc)
			}
		})
		t.Run("put again changes nothing", func(t *testing.T) {
			before := takeSnapshot(t, store)
			w := e.do(e.as("acme", "PUT", dkimPath+"/acme/SpamTrap.DK."))
			wantStatus(t, w, http.StatusOK)
			if again := decode[domainEntry](t, w); !sameEntry(again, created) {
				t.Errorf("second PUT answered %+v, first %+v", again, created)
			}
			unchanged(t, store, before)
		})
		t.Run("get domain", func(t *testing.T) {
			w := e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk"))
			wantStatus(t, w, http.StatusOK)
			if got := decode[domainEntry](t, w); !sameEntry(got, created) {
				t.Errorf("GET %+v, PUT %+v", got, created)
			}
		})
		t.Run("get selector", func(t *testing.T) {
			w := e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk/selector2"))
			wantStatus(t, w, http.StatusOK)
			got := decode[selectorEntry](t, w)
			if !sameJSON(got, created.Selectors[1]) {
				t.Errorf("selector2 %+v, in entry %+v", got, created.Selectors[1])
			}
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk/selector9")), 404, "SELECTOR_NOT_FOUND", "selector not found")
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/other.dk/selector1")), 404, "DOMAIN_NOT_FOUND", "domain not found")
		})
		t.Run("list", func(t *testing.T) {
			w := e.do(e.as("acme", "GET", dkimPath+"/acme"))
			wantStatus(t, w, http.StatusOK)
			list := decode[[]domainEntry](t, w)
			if len(list) != 1 || !sameEntry(list[0], created) {
				t.Errorf("list %+v", list)
			}
			if l := w.Header().Get("Link"); l != "" {
				t.Errorf("Link %q on the only page", l)
			}
		})
		t.Run("delete", func(t *testing.T) {
			w := e.do(e.as("acme", "DELETE", dkimPath+"/acme/spamtrap.dk"))
			wantStatus(t, w, http.StatusNoContent)
			if w.Body.Len() != 0 {
				t.Errorf("204 with body %q", w.Body.String())
			}
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk")), 404, "DOMAIN_NOT_FOUND", "domain not found")
			keys, err := store.Keys(t.Context(), keystore.OwnerDomain, "spamtrap.dk")
			if err != nil || len(keys) != 0 {
				t.Errorf("keys after delete: %v, %v", keys, err)
			}
			wantError(t, e.do(e.as("acme", "DELETE", dkimPath+"/acme/spamtrap.dk")), 404, "DOMAIN_NOT_FOUND", "domain not found")
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme")), 404, "NO_DKIM_ENTRIES", "No DKIM entries found")
		})
		t.Run("audit", func(t *testing.T) {
			recs, err := store.Audit(t.Context(), keystore.AuditFilter{Domain: "spamtrap.dk", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			actions := map[string]int{}
			for _, r := range recs {
				if r.Actor == actorForTest.Name {
					continue // the fixture's maildomain
				}
				if r.Actor != "brand:acme" || r.RequestID == "" {
					t.Errorf("audit %+v: want actor brand:acme and a request id", r)
				}
				actions[r.Action]++
			}
			if actions["domain.create"] != 1 || actions["domain.delete"] != 1 || actions["key.create"] != 2 || actions["key.destroy"] != 2 {
				t.Errorf("audit actions %v", actions)
			}
		})
	})
}

func sameEntry(a, b domainEntry) bool { return sameJSON(a, b) }

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// checkEntry checks a fresh domain entry field by field.
func checkEntry(t *testing.T, e domainEntry, brand, domain, label string) {
	t.Helper()
	if e.Domain != domain || e.Brand != brand || e.Status != keystore.StatusPendingDNS || e.ActiveSelector != "selector1" {
		t.Errorf("entry %+v", e)
	}
	if e.CreatedAt == nil || e.UpdatedAt == nil {
		t.Errorf("createdAt %v updatedAt %v", e.CreatedAt, e.UpdatedAt)
	}
	if len(e.Selectors) != 2 {
		t.Fatalf("selectors %+v", e.Selectors)
	}
	for i, want := range []struct{ sel, state string }{{"selector1", "active"}, {"selector2", "next"}} {
		s := e.Selectors[i]
		if s.Selector != want.sel || s.State != want.state || s.Algorithm != "rsa" || s.KeyBits != 2048 {
			t.Errorf("selector %d: %+v", i, s)
		}
		target := want.sel + "-" + label + "._domainkey." + testZone
		if s.TXTName != target || s.CNAME.Target != target || s.CNAME.Name != want.sel+"._domainkey."+domain {
			t.Errorf("names of %s: txtName %q cname %+v", want.sel, s.TXTName, s.CNAME)
		}
		pub, err := base64.StdEncoding.DecodeString(s.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dkimkey.ParsePublic("rsa", pub); err != nil {
			t.Errorf("publicKey of %s: %v", want.sel, err)
		}
		if s.TXTValue != dkimkey.TXTValue("rsa", pub) || !strings.HasPrefix(s.TXTValue, "v=DKIM1; k=rsa; p=MII") {
			t.Errorf("txtValue %q", s.TXTValue)
		}
		if s.Fingerprint != dkimkey.Fingerprint(pub) || s.PublishedAt == nil {
			t.Errorf("fingerprint %q publishedAt %v", s.Fingerprint, s.PublishedAt)
		}
	}
	if e.Selectors[0].PublicKey == e.Selectors[1].PublicKey {
		t.Error("selector1 and selector2 share a key")
	}
}

// TestNoPrivateKeyMaterial checks every read answer for anything that looks
// like a private key.
func TestNoPrivateKeyMaterial(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme", "spamtrap.dk")
	wantStatus(t, e.do(req{method: "PUT", path: dkimPath + "/acme/spamtrap.dk", body: `{"ed25519":true}`, user: "acme", pass: e.secrets["acme"]}), 201)
	keys, err := store.Keys(t.Context(), keystore.OwnerDomain, "spamtrap.dk")
	if err != nil || len(keys) != 4 {
		t.Fatalf("keys %v %v", len(keys), err)
	}
	for _, path := range []string{"/acme", "/acme/spamtrap.dk", "/acme/spamtrap.dk/selector1", "/acme/spamtrap.dk/selector1-ed25519"} {
		w := e.do(e.as("acme", "GET", dkimPath+path))
		wantStatus(t, w, 200)
		body := w.Body.String()
		for _, k := range keys {
			for _, secret := range []string{base64.StdEncoding.EncodeToString(k.SealedPrivateKey), k.KEKID} {
				if strings.Contains(body, secret) {
					t.Errorf("%s shows sealed key material of %s", path, k.Selector)
				}
			}
		}
		if strings.Contains(strings.ToLower(body), "private") || strings.Contains(body, "sealed") {
			t.Errorf("%s mentions private keys: %s", path, body)
		}
	}
}

func TestPutErrors(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		long := strings.Repeat("a", 50) + ".dk" // label of 53 octets: fits RSA, not Ed25519
		e.brand("acme", "spamtrap.dk", "a-b.dk", "a.b.dk", long, strings.Repeat("b", 51)+".dk")
		e.brand("other", "taken.dk")
		as := func(method, path, body string) req {
			r := e.as("acme", method, dkimPath+path)
			r.body = body
			return r
		}
		otherPut := e.as("other", "PUT", dkimPath+"/other/taken.dk")
		wantStatus(t, e.do(otherPut), 201)
		wantStatus(t, e.do(as("PUT", "/acme/a-b.dk", "")), 201)

		for _, tc := range []struct {
			name         string
			req          req
			status       int
			code, titled string
		}{
			{"garbage domain", as("PUT", "/acme/not_a_domain!", ""), 400, "INVALID_DOMAIN", "not a valid host name"},
			{"one label", as("PUT", "/acme/localhost", ""), 400, "INVALID_DOMAIN", "two labels"},
			{"IP address", as("PUT", "/acme/192.0.2.1", ""), 400, "INVALID_DOMAIN", "IP address"},
			{"wildcard", as("PUT", "/acme/*.spamtrap.dk", ""), 400, "INVALID_DOMAIN", "wildcard"},
			{"inside the zone", as("PUT", "/acme/x.oxcloud.zone", ""), 400, "INVALID_DOMAIN", "service zone"},
			{"not a maildomain", as("PUT", "/acme/unknown.dk", ""), 404, "MAILDOMAIN_NOT_PROVISIONED", "not a maildomain"},
			{"held by another brand", as("PUT", "/acme/taken.dk", ""), 409, "DOMAIN_HELD_BY_OTHER_BRAND", "another brand"},
			{"label clash", as("PUT", "/acme/a.b.dk", ""), 409, "LABEL_CLASH", "a-b.dk"},
			{"label too long", as("PUT", "/acme/"+strings.Repeat("b", 51)+".dk", ""), 422, "LABEL_TOO_LONG", "at most 53"},
			{"label too long with ed25519", as("PUT", "/acme/"+long, `{"ed25519":true}`), 422, "LABEL_TOO_LONG", "at most 45"},
			{"bad keyBits", as("PUT", "/acme/spamtrap.dk", `{"keyBits":1024}`), 400, "INVALID_BODY", "2048, 3072 or 4096"},
			{"unknown field", as("PUT", "/acme/spamtrap.dk", `{"keyBits":2048,"selector":"x"}`), 400, "INVALID_BODY", "unknown field"},
			{"malformed JSON", as("PUT", "/acme/spamtrap.dk", `{"keyBits":`), 400, "INVALID_BODY", "JSON"},
			{"wrong type", as("PUT", "/acme/spamtrap.dk", `{"keyBits":"2048"}`), 400, "INVALID_BODY", "keyBits"},
			{"two values", as("PUT", "/acme/spamtrap.dk", `{} {}`), 400, "INVALID_BODY", "more than one"},
			{"not an object", as("PUT", "/acme/spamtrap.dk", `[1]`), 400, "INVALID_BODY", ""},
			{"oversized", as("PUT", "/acme/spamtrap.dk", `{"keyBits":2048`+strings.Repeat(" ", 70<<10)+`}`), 413, "BODY_TOO_LARGE", "too large"},
			{"wrong content type", func() req { r := as("PUT", "/acme/spamtrap.dk", `{}`); r.contentType = "text/plain"; return r }(), 415, "UNSUPPORTED_MEDIA_TYPE", "application/json"},
			{"wrong method", as("POST", "/acme/spamtrap.dk", `{}`), 405, "METHOD_NOT_ALLOWED", "method"},
			{"other brand's path", func() req { r := as("PUT", "/other/spamtrap.dk", ""); return r }(), 403, "FORBIDDEN", ""},
			{"delete other brand's domain", as("DELETE", "/acme/taken.dk", ""), 404, "DOMAIN_NOT_FOUND", "domain not found"},
			{"delete bad domain", as("DELETE", "/acme/-x-.dk", ""), 400, "INVALID_DOMAIN", "invalid label"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := takeSnapshot(t, store)
				wantError(t, e.do(tc.req), tc.status, tc.code, tc.titled)
				unchanged(t, store, before)
			})
		}

		t.Run("IDN stored as A-label", func(t *testing.T) {
			if err := e.svc.AddMaildomain(t.Context(), "acme", "xn--bcher-kva.example", actorForTest); err != nil {
				t.Fatal(err)
			}
			w := e.do(as("PUT", "/acme/b%C3%BCcher.example", ""))
			wantStatus(t, w, 201)
			if got := decode[domainEntry](t, w); got.Domain != "xn--bcher-kva.example" || got.Selectors[0].TXTName != "selector1-xn--bcher-kva-example._domainkey.oxcloud.zone" {
				t.Errorf("IDN entry %+v", got)
			}
		})
		t.Run("keyBits and ed25519", func(t *testing.T) {
			w := e.do(as("PUT", "/acme/spamtrap.dk", `{"keyBits":2048,"ed25519":true}`))
			wantStatus(t, w, 201)
			got := decode[domainEntry](t, w)
			var sels []string
			for _, s := range got.Selectors {
				sels = append(sels, s.Selector+"/"+s.Algorithm+"/"+s.State)
			}
			if want := "selector1/rsa/active selector2/rsa/next selector1-ed25519/ed25519/active selector2-ed25519/ed25519/next"; strings.Join(sels, " ") != want {
				t.Errorf("selectors %v, want %s", sels, want)
			}
		})
	})
}

// TestConcurrentPut is provisioning scripts retrying in parallel: exactly one
// PUT creates, the others see the same keys.
func TestConcurrentPut(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, store *keystore.SQL) {
		e := newEnv(t, store)
		e.brand("acme", "spamtrap.dk")
		// Verify the secret once, so that the PUTs race in provisioning and
		// not in six parallel argon2 runs.
		wantStatus(t, e.do(e.as("acme", "GET", dkimPath+"/acme")), 404)
		const n = 6
		codes := make(chan int, n)
		fps := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"))
				codes <- w.Code
				var got domainEntry
				if err := json.Unmarshal(w.Body.Bytes(), &got); err == nil && len(got.Selectors) > 0 {
					fps <- got.Selectors[0].Fingerprint
				} else {
					fps <- "body: " + w.Body.String()
				}
			}()
		}
		wg.Wait()
		close(codes)
		close(fps)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[201] != 1 || count[200] != n-1 {
			t.Errorf("statuses %v, want one 201 and %d 200", count, n-1)
		}
		first := ""
		for fp := range fps {
			if first == "" {
				first = fp
			}
			if fp != first {
				t.Errorf("answers show different keys: %s vs %s", fp, first)
			}
		}
		keys, err := store.Keys(t.Context(), keystore.OwnerDomain, "spamtrap.dk")
		if err != nil || len(keys) != 2 || keys[0].Fingerprint != first {
			t.Errorf("stored keys %d (%v), first %s", len(keys), err, first)
		}
	})
}
