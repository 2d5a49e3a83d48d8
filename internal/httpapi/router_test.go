package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/rotation"
)

func TestRouterErrors(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme")
	for _, tc := range []struct {
		name   string
		req    req
		status int
		code   string
		allow  string
	}{
		{"unknown path", req{method: "GET", path: "/nope"}, 404, "NOT_FOUND", ""},
		{"base path without brand", e.as("acme", "GET", dkimPath+"/"), 404, "NOT_FOUND", ""},
		{"too deep", e.as("acme", "GET", dkimPath+"/acme/a.dk/selector1/x"), 404, "NOT_FOUND", ""},
		{"POST on the list", e.as("acme", "POST", dkimPath+"/acme"), 405, "METHOD_NOT_ALLOWED", "GET, HEAD"},
		{"PATCH a domain", e.as("acme", "PATCH", dkimPath+"/acme/a.dk"), 405, "METHOD_NOT_ALLOWED", "GET, HEAD, PUT, DELETE"},
		{"GET rotate", e.as("acme", "GET", dkimPath+"/acme/a.dk/rotate"), 404, "DOMAIN_NOT_FOUND", ""},
		{"DELETE openapi", req{method: "DELETE", path: "/openapi.json"}, 405, "METHOD_NOT_ALLOWED", "GET, HEAD"},
		{"admin wrong method", req{method: "PUT", path: AdminBase + "/brands", bearer: testOperator}, 405, "METHOD_NOT_ALLOWED", "GET, HEAD, POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, store)
			w := e.do(tc.req)
			wantError(t, w, tc.status, tc.code, "")
			if got := w.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			unchanged(t, store, before)
		})
	}
}

func TestRequestID(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, tc := range []struct {
		name, in string
		keep     bool
	}{
		{"none", "", false},
		{"sane", "req-42.abc_DEF:1", true},
		{"too long", strings.Repeat("a", 129), false},
		{"log injection", "x\" level=ERROR", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req{method: "GET", path: "/nope", header: http.Header{}}
			if tc.in != "" {
				r.header.Set("X-Request-Id", tc.in)
			}
			got := e.do(r).Header().Get("X-Request-Id")
			if tc.keep && got != tc.in || !tc.keep && !hex32.MatchString(got) {
				t.Errorf("X-Request-Id %q for %q", got, tc.in)
			}
		})
	}
}

func TestPagination(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	var names []string
	for i := range 5 {
		names = append(names, fmt.Sprintf("d%d.example", i))
	}
	e.brand("acme", names...)
	for _, n := range names {
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/"+n)), 201)
	}
	t.Run("follow Link", func(t *testing.T) {
		var got []string
		e.followLinks(t, "acme", dkimPath+"/acme?limit=2", 6, func(w *httptest.ResponseRecorder) {
			for _, d := range decode[[]domainEntry](t, w) {
				got = append(got, d.Domain)
			}
		})
		if !slices.Equal(got, names) {
			t.Errorf("pages gave %v, want %v", got, names)
		}
	})
	t.Run("default and cap", func(t *testing.T) {
		for _, q := range []string{"", "?limit=5", "?limit=100000"} {
			w := e.do(e.as("acme", "GET", dkimPath+"/acme"+q))
			wantStatus(t, w, 200)
			if n := len(decode[[]domainEntry](t, w)); n != 5 || w.Header().Get("Link") != "" {
				t.Errorf("%q: %d entries, Link %q", q, n, w.Header().Get("Link"))
			}
		}
		r := httptestRequest("GET", "/?limit=5000")
		if n, err := pageLimit(r, defaultLimit, maxLimit); err != nil || n != 1000 {
			t.Errorf("limit=5000 gives %d, %v; want 1000", n, err)
		}
	})
	t.Run("past the end", func(t *testing.T) {
		w := e.do(e.as("acme", "GET", dkimPath+"/acme?after=zzz.example"))
		wantStatus(t, w, 200)
		if strings.TrimSpace(w.Body.String()) != "[]" {
			t.Errorf("body %s", w.Body.String())
		}
	})
	for _, q := range []string{"limit=0", "limit=-1", "limit=abc"} {
		t.Run(q, func(t *testing.T) {
			wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme?"+q)), 400, "INVALID_PARAMETER", "limit")
		})
	}
}

// TestRotationEndpoints drives rotate and dns through the real rotation
// service. Its DNS checker asks a resolver address where nothing listens,
// so every check reports a resolver error rather than a verdict.
func TestRotationEndpoints(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	t.Run("not configured", func(t *testing.T) {
		e := newEnv(t, store)
		e.brand("acme", "spamtrap.dk")
		wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), 201)
		wantError(t, e.do(e.as("acme", "POST", dkimPath+"/acme/spamtrap.dk/rotate")), 503, "ROTATION_UNAVAILABLE", "rotation")
		wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk/dns")), 503, "ROTATION_UNAVAILABLE", "rotation")
		wantError(t, e.do(e.as("acme", "GET", dkimPath+"/acme/nope.dk/dns")), 404, "DOMAIN_NOT_FOUND", "domain not found")
	})

	e := newEnv(t, store)
	checker, err := rotation.NewChecker(deadResolver(t), testZone)
	if err != nil {
		t.Fatal(err)
	}
	checker.Timeout = 200 * time.Millisecond
	rot, err := rotation.New(store, e.svc, checker, rotation.Config{}, e.clock.Now, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetRotator(rot)
	e.brand("beta", "beta.dk")
	e.brand("gamma")
	wantStatus(t, e.do(e.as("beta", "PUT", dkimPath+"/beta/beta.dk")), 201)

	t.Run("rotate", func(t *testing.T) {
		w := e.do(e.as("beta", "POST", dkimPath+"/beta/beta.dk/rotate"))
		wantStatus(t, w, 202)
		if got := decode[domainEntry](t, w); got.Rotation.PendingSwitchAt == nil {
			t.Errorf("no pendingSwitchAt in %+v", got.Rotation)
		}
		recs, err := store.Audit(t.Context(), keystore.AuditFilter{Domain: "beta.dk", Limit: 1})
		if err != nil || len(recs) != 1 || recs[0].Actor != "brand:beta" || recs[0].RequestID != w.Header().Get("X-Request-Id") {
			t.Errorf("last audit record %+v, %v", recs, err)
		}
	})
	t.Run("pending", func(t *testing.T) {
		before := takeSnapshot(t, store)
		wantError(t, e.do(e.as("beta", "POST", dkimPath+"/beta/beta.dk/rotate")), 409, "ROTATION_PENDING", "pending")
		unchanged(t, store, before)
	})
	t.Run("bad emergency", func(t *testing.T) {
		before := takeSnapshot(t, store)
		wantError(t, e.do(e.as("beta", "POST", dkimPath+"/beta/beta.dk/rotate?emergency=maybe")), 400, "INVALID_PARAMETER", "emergency")
		unchanged(t, store, before)
	})
	t.Run("other brand", func(t *testing.T) {
		wantError(t, e.do(e.as("gamma", "POST", dkimPath+"/gamma/beta.dk/rotate?emergency=true")), 404, "DOMAIN_NOT_FOUND", "domain not found")
	})
	t.Run("emergency", func(t *testing.T) {
		w := e.do(e.as("beta", "POST", dkimPath+"/beta/beta.dk/rotate?emergency=true"))
		wantStatus(t, w, 202)
		got := decode[domainEntry](t, w)
		if got.ActiveSelector != "selector2" {
			t.Errorf("active selector %q after an emergency", got.ActiveSelector)
		}
		for _, s := range got.Selectors {
			if s.Selector == "selector1" && (s.State != "revoked" || s.TXTValue != "v=DKIM1; k=rsa; p=" || s.PublicKey != "") {
				t.Errorf("revoked selector1 shows %+v", s)
			}
		}
	})
	t.Run("dns", func(t *testing.T) {
		w := e.do(e.as("beta", "GET", dkimPath+"/beta/beta.dk/dns"))
		wantStatus(t, w, 200)
		got := decode[dnsReport](t, w)
		if got.Domain != "beta.dk" || len(got.Selectors) < 2 {
			t.Fatalf("report %+v", got)
		}
		for _, c := range got.Selectors {
			if c.CNAME.Name != c.Selector+"._domainkey.beta.dk" || c.CNAME.Target != c.Selector+"-beta-dk._domainkey."+testZone || c.Verdict == "ok" {
				t.Errorf("check %+v", c)
			}
		}
	})
}

// deadResolver is a UDP address where nothing answers.
func deadResolver(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

func TestToProblem(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{rotation.ErrRotationPending, 409, "ROTATION_PENDING"},
		{fmt.Errorf("x: %w", keystore.ErrUnavailable), 503, "UNAVAILABLE"},
		{fmt.Errorf("x: %w", keystore.ErrNotFound), 404, "NOT_FOUND"},
		{fmt.Errorf("x: %w", keystore.ErrConflict), 409, "CONFLICT"},
		{fmt.Errorf("x: %w", keystore.ErrStale), 409, "CONFLICT"},
		{fmt.Errorf("x: %w", provision.ErrNotMaildomain), 404, "MAILDOMAIN_NOT_PROVISIONED"},
		{fmt.Errorf("x: %w", provision.ErrHeldByOther), 409, "DOMAIN_HELD_BY_OTHER_BRAND"},
		{fmt.Errorf("x: %w", provision.ErrLabelClash), 409, "LABEL_CLASH"},
		{fmt.Errorf("x: %w", provision.ErrBadOptions), 400, "INVALID_BODY"},
		{fmt.Errorf("x: %w", domainname.ErrLabelTooLong), 422, "LABEL_TOO_LONG"},
		{fmt.Errorf("x: %w", &domainname.Invalid{Reason: "r"}), 400, "INVALID_DOMAIN"},
		{fmt.Errorf("wrapped: %w", errDomainNotFound), 404, "DOMAIN_NOT_FOUND"},
		{fmt.Errorf("keystore: begin: %w", context.Canceled), statusClientClosed, "CLIENT_CLOSED_REQUEST"},
		{errors.New("boom"), 500, "INTERNAL"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			p := toProblem(tc.err)
			if p.status != tc.status || p.code != tc.code {
				t.Errorf("%d %s, want %d %s", p.status, p.code, tc.status, tc.code)
			}
			if tc.status == 500 && p.title != "internal error" {
				t.Errorf("title %q leaks the cause", p.title)
			}
		})
	}
}

func TestLogsAndMetrics(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	e.brand("acme", "spamtrap.dk")
	w := e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"))
	wantStatus(t, w, 201)
	e.do(req{method: "GET", path: "/no/such/thing"})

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want one per request: %v", len(lines), lines)
	}
	put := lines[0]
	for k, want := range map[string]any{"method": "PUT", "route": BrandBase + "/{brand}/{domain}", "status": 201.0, "brand": "acme", "request_id": w.Header().Get("X-Request-Id")} {
		if put[k] != want {
			t.Errorf("log %s = %v, want %v", k, put[k], want)
		}
	}
	if _, ok := put["duration_ms"].(float64); !ok {
		t.Error("no duration in the log")
	}
	if lines[1]["route"] != "unmatched" {
		t.Errorf("unmatched route logged as %v", lines[1]["route"])
	}
	if strings.Contains(e.logs.String(), e.secrets["acme"]) {
		t.Error("the secret is in the log")
	}
	if n := testutil.ToFloat64(e.srv.metrics.requests.WithLabelValues(BrandBase+"/{brand}/{domain}", "PUT", "201")); n != 1 {
		t.Errorf("dkimd_api_requests_total for the PUT = %v", n)
	}
	if n := testutil.CollectAndCount(e.reg, "dkimd_api_request_duration_seconds"); n != 2 {
		t.Errorf("%d duration series, want 2", n)
	}
}

// TestOpenAPIMatchesRouter holds the served document against the router:
// every route is documented and every documented operation is routed.
func TestOpenAPIMatchesRouter(t *testing.T) {
	store := keystoretest.Open(t, keystore.SQLite)
	e := newEnv(t, store)
	w := e.do(req{method: "GET", path: "/openapi.json"})
	wantStatus(t, w, 200)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	routed := map[string]bool{}
	err := chi.Walk(e.srv.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := range routed {
		if !documented[r] {
			t.Errorf("route %s is not in the OpenAPI document", r)
		}
	}
	for d := range documented {
		if !routed[d] {
			t.Errorf("documented %s has no route", d)
		}
	}
	if len(routed) < 16 {
		t.Errorf("only %d routes walked", len(routed))
	}
}
