package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/clocktest"
	"dkimd/internal/keystore"
	"dkimd/internal/logtest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
)

const (
	testZone     = "oxcloud.zone"
	testOperator = "operator-token-for-tests"
)

var actorForTest = provision.Actor{Name: "test"}

// env is a Server on a real store with a brand or two.
type env struct {
	t       *testing.T
	store   keystore.Store
	svc     *provision.Service
	srv     *Server
	clock   *clocktest.Clock
	logs    *logtest.Buffer
	reg     *prometheus.Registry
	secrets map[string]string
}

type envOption func(*Options)

func newEnv(t *testing.T, store keystore.Store, opts ...envOption) *env {
	t.Helper()
	c := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)) // nanoseconds: the store keeps microseconds
	svc := provisiontest.Service(t, store, testZone, c.Now)
	logs := &logtest.Buffer{}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Store: store, Service: svc, OperatorToken: testOperator, Now: c.Now, Metrics: m,
		Log: slog.New(slog.NewJSONHandler(logs, nil)), Console: testConsole(t, store, c.Now),
	}
	for _, f := range opts {
		f(&o)
	}
	return &env{t: t, store: store, svc: svc, srv: New(o), clock: c, logs: logs, reg: reg, secrets: map[string]string{}}
}

// brand creates a brand with maildomains through provision.
func (e *env) brand(name string, maildomains ...string) {
	e.t.Helper()
	ctx := context.Background()
	secret, err := e.svc.CreateBrand(ctx, name, provision.Actor{Name: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets[name] = secret
	for _, d := range maildomains {
		if err := e.svc.AddMaildomain(ctx, name, d, provision.Actor{Name: "test"}); err != nil {
			e.t.Fatal(err)
		}
	}
}

type req struct {
	method, path string
	body         string
	contentType  string // default application/json when body is set
	user, pass   string // Basic auth when user is set
	bearer       string
	remote       string
	header       http.Header
}

// as returns a request authenticated as brand.
func (e *env) as(brand, method, path string) req {
	return req{method: method, path: path, user: brand, pass: e.secrets[brand]}
}

func (e *env) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	if r.user != "" {
		hr.SetBasicAuth(r.user, r.pass)
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	for k, v := range r.header {
		hr.Header[k] = v
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, hr)
	return w
}

func (e *env) admin(method, path, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do(req{method: method, path: AdminBase + path, body: body, bearer: testOperator})
}

// wantStatus fails unless w has status; it shows the body when not.
func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body: %s", w.Code, status, w.Body.String())
	}
}

// wantError checks a complete error answer: status, envelope, code, the
// request id matching the header, and optionally words in the title.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int, code, titleHas string) {
	t.Helper()
	wantStatus(t, w, status)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var env struct {
		Errors []map[string]string `json:"errors"`
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || len(env.Errors) != 1 {
		t.Fatalf("not an error envelope (%v): %s", err, w.Body.String())
	}
	got := env.Errors[0]
	if len(got) != 4 {
		t.Errorf("envelope entry has fields %v, want code, id, status, title", got)
	}
	if got["code"] != code {
		t.Errorf("code %q, want %q (title %q)", got["code"], code, got["title"])
	}
	if got["status"] != strconv.Itoa(status) {
		t.Errorf("status field %q, want %q", got["status"], strconv.Itoa(status))
	}
	if got["id"] == "" || got["id"] != w.Header().Get("X-Request-Id") {
		t.Errorf("id %q, X-Request-Id %q", got["id"], w.Header().Get("X-Request-Id"))
	}
	if !strings.Contains(got["title"], titleHas) {
		t.Errorf("title %q does not contain %q", got["title"], titleHas)
	}
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v; body: %s", v, err, w.Body.String())
	}
	return v
}

// snapshot is everything a request could change in the store.
type snapshot struct {
	Brands      []keystore.Brand
	Maildomains map[string][]string
	Domains     map[string][]keystore.Domain
	Keys        map[string][]keystore.Key
	Audit       []keystore.AuditRecord
	Serial      uint32
}

func takeSnapshot(t *testing.T, s keystore.Store) snapshot {
	t.Helper()
	ctx := context.Background()
	var snap snapshot
	var err error
	if snap.Brands, err = s.Brands(ctx); err != nil {
		t.Fatal(err)
	}
	snap.Maildomains = map[string][]string{}
	snap.Domains = map[string][]keystore.Domain{}
	snap.Keys = map[string][]keystore.Key{}
	for _, b := range snap.Brands {
		if snap.Maildomains[b.Name], err = s.Maildomains(ctx, b.Name); err != nil {
			t.Fatal(err)
		}
		ds, err := s.Domains(ctx, b.Name, "", 10000)
		if err != nil {
			t.Fatal(err)
		}
		snap.Domains[b.Name] = ds
		for _, d := range ds {
			if snap.Keys[d.Name], err = s.Keys(ctx, keystore.OwnerDomain, d.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	if snap.Audit, err = s.Audit(ctx, keystore.AuditFilter{Limit: keystore.MaxAuditPage}); err != nil {
		t.Fatal(err)
	}
	if snap.Serial, err = s.Serial(ctx); err != nil {
		t.Fatal(err)
	}
	return snap
}

// unchanged fails when the store differs from before.
func unchanged(t *testing.T, s keystore.Store, before snapshot) {
	t.Helper()
	after := takeSnapshot(t, s)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

func httptestRequest(method, target string) *http.Request {
	return httptest.NewRequest(method, target, nil)
}

// followLinks GETs path as brand, then every page the Link header's
// rel="next" names, handing each 200 answer to page; more than maxPages
// pages fails the test (a Link that never ends).
func (e *env) followLinks(t *testing.T, brand, path string, maxPages int, page func(w *httptest.ResponseRecorder)) {
	t.Helper()
	next := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
	for pages := 0; path != ""; pages++ {
		if pages == maxPages {
			t.Fatal("Link never ends")
		}
		w := e.do(e.as(brand, "GET", path))
		wantStatus(t, w, 200)
		page(w)
		path = ""
		if l := w.Header().Get("Link"); l != "" {
			m := next.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("Link %q", l)
			}
			path = m[1]
		}
	}
}
