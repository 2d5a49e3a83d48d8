package httpapi

import (
	"net/url"
	"testing"

	"dkimd/internal/cutproxy"
	"dkimd/internal/keystore/keystoretest"
)

// TestDatabaseDown cuts the API off its Postgres and checks that every call
// answers 503 in the envelope, and that it recovers when the database is
// back.
func TestDatabaseDown(t *testing.T) {
	dbURL := keystoretest.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := cutproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	store := keystoretest.OpenPostgres(t, u.String())
	e := newEnv(t, store)
	e.brand("acme", "spamtrap.dk")
	wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), 201)

	proxy.SetDown(true)
	for _, r := range []req{
		e.as("acme", "GET", dkimPath+"/acme"),
		e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk"),
		e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"),
		e.as("acme", "DELETE", dkimPath+"/acme/spamtrap.dk"),
		{method: "GET", path: AdminBase + "/brands", bearer: testOperator},
	} {
		t.Run("down "+r.method+" "+r.path, func(t *testing.T) {
			w := e.do(r)
			if w.Code != 503 {
				t.Log(e.logs.String())
			}
			wantError(t, w, 503, "UNAVAILABLE", "unavailable")
		})
	}
	proxy.SetDown(false)
	t.Run("back", func(t *testing.T) {
		wantStatus(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk")), 200)
	})
}
