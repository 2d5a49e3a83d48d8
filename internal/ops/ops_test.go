package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/clocktest"
	"dkimd/internal/httpcall"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/ops"
)

type fixture struct {
	srv   *httptest.Server
	store *keystore.SQL
	ready *ops.Readiness
	reg   *prometheus.Registry
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	store := keystoretest.Open(t, keystore.SQLite)
	reg := prometheus.NewRegistry()
	if err := ops.RegisterRuntime(reg, "test-version", store.Dialect()); err != nil {
		t.Fatal(err)
	}
	ready := ops.NewReadiness()
	ready.RegisterStore(store)
	srv := httptest.NewServer(ops.NewHandler(reg, ready, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return fixture{srv: srv, store: store, ready: ready, reg: reg}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, b := httpcall.Do(t, req)
	return resp.StatusCode, resp.Header, string(b)
}

type readyBody struct {
	Status string `json:"status"`
	Checks []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"checks"`
}

func getReady(t *testing.T, f fixture) (int, readyBody) {
	t.Helper()
	code, h, body := get(t, f.srv.URL+"/readyz")
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/readyz Content-Type = %q, want application/json", ct)
	}
	var rb readyBody
	if err := json.Unmarshal([]byte(body), &rb); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, rb
}

func failing(rb readyBody) map[string]string {
	out := map[string]string{}
	for _, c := range rb.Checks {
		if !c.OK {
			out[c.Name] = c.Error
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "dkimd_test_things_total", Help: "Things counted by the test."})
	f.reg.MustRegister(c)
	c.Add(3)

	code, h, body := get(t, f.srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type = %q", ct)
	}
	for _, want := range []string{
		"dkimd_test_things_total 3",
		"go_goroutines ",
		"go_memstats_heap_alloc_bytes ",
		"process_open_fds ",
		"process_resident_memory_bytes ",
		`dkimd_build_info{dialect="sqlite",version="test-version"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The collectors go on the injected registry, not the global one.
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dkimd_") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t)
	code, _, body := get(t, f.srv.URL+"/healthz")
	if code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	// Liveness does not depend on the store: a lost database must not get
	// every replica restarted.
	f.store.Close()
	if code, _, _ := get(t, f.srv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with the store closed = %d, want 200", code)
	}
}

func TestReadyz(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		f := newFixture(t)
		code, rb := getReady(t, f)
		if code != http.StatusOK || rb.Status != "ready" {
			t.Fatalf("/readyz = %d %+v", code, rb)
		}
		names := map[string]bool{}
		for _, c := range rb.Checks {
			names[c.Name] = c.OK
		}
		if !names["store"] || !names["schema"] {
			t.Errorf("checks = %+v, want store and schema passing", rb.Checks)
		}
	})
	t.Run("registered check fails", func(t *testing.T) {
		f := newFixture(t)
		var loaded atomic.Bool
		f.ready.Register("zone", func(context.Context) error {
			if !loaded.Load() {
				return errors.New("zone not loaded yet")
			}
			return nil
		})
		code, rb := getReady(t, f)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz = %d, want 503", code)
		}
		if got := failing(rb); len(got) != 1 || got["zone"] != "zone not loaded yet" {
			t.Errorf("failing checks = %v, want only zone with its reason", got)
		}
		loaded.Store(true)
		if code, rb := getReady(t, f); code != http.StatusOK {
			t.Errorf("/readyz after the zone loaded = %d %+v", code, rb)
		}
	})
	t.Run("store closed", func(t *testing.T) {
		f := newFixture(t)
		if err := f.store.Close(); err != nil {
			t.Fatal(err)
		}
		code, rb := getReady(t, f)
		if code != http.StatusServiceUnavailable || rb.Status != "not ready" {
			t.Fatalf("/readyz = %d %+v, want 503", code, rb)
		}
		got := failing(rb)
		if !strings.Contains(got["store"], "closed") {
			t.Errorf("failing checks = %v, want store naming the closed database", got)
		}
	})
	t.Run("hung check times out", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits for ops.CheckTimeout")
		}
		f := newFixture(t)
		f.ready.Register("slow", func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
		code, rb := getReady(t, f)
		if code != http.StatusServiceUnavailable || !strings.Contains(failing(rb)["slow"], "deadline") {
			t.Fatalf("/readyz = %d %+v, want 503 naming slow", code, rb)
		}
	})
	t.Run("panicking check", func(t *testing.T) {
		f := newFixture(t)
		f.ready.Register("broken", func(context.Context) error { panic("boom") })
		code, rb := getReady(t, f)
		if code != http.StatusServiceUnavailable || !strings.Contains(failing(rb)["broken"], "boom") {
			t.Fatalf("/readyz = %d %+v", code, rb)
		}
	})
	t.Run("register replaces", func(t *testing.T) {
		f := newFixture(t)
		f.ready.Register("zone", func(context.Context) error { return errors.New("old") })
		f.ready.Register("zone", func(context.Context) error { return nil })
		code, rb := getReady(t, f)
		if code != http.StatusOK || len(rb.Checks) != 3 {
			t.Fatalf("/readyz = %d %+v, want 200 with store, schema, zone", code, rb)
		}
	})
}

func TestMethodAndPath(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Post(f.srv.URL+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", resp.StatusCode)
	}
	if code, _, _ := get(t, f.srv.URL+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

// TestReadyzStoreTurnsNotReadyWhileWritesFail makes the SQLite files
// immutable (as root a chmod would not stop a write), so the store still
// answers reads but takes no write, then lets it write again.
func TestReadyzStoreTurnsNotReadyWhileWritesFail(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr (e2fsprogs) not installed")
	}
	dir := t.TempDir()
	store, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ready := ops.NewReadiness()
	ready.RegisterStoreEvery(store, 0, time.Now) // probe on every request
	srv := httptest.NewServer(ops.NewHandler(prometheus.NewRegistry(), ready, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	f := fixture{srv: srv, store: store, ready: ready}

	if code, rb := getReady(t, f); code != 200 {
		t.Fatalf("/readyz before = %d %+v", code, rb)
	}
	db := filepath.Join(dir, keystore.SQLiteFileName)
	files := []string{db, db + "-wal"}
	if out, err := exec.Command("chattr", append([]string{"+i"}, files...)...).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s (needs CAP_LINUX_IMMUTABLE)", err, out)
	}
	unlock := func() { _ = exec.Command("chattr", append([]string{"-i"}, files...)...).Run() }
	t.Cleanup(unlock)
	code, rb := getReady(t, f)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz on a store that takes no write = %d, want 503", code)
	}
	if got := failing(rb); len(got) != 1 || !strings.Contains(got["store"], "write probe") {
		t.Errorf("failing checks %v, want only store, saying write probe", got)
	}
	unlock()
	if code, rb := getReady(t, f); code != 200 {
		t.Errorf("/readyz after writes work again = %d %+v", code, rb)
	}
}

func TestWriteProbeRunsAtMostOncePerInterval(t *testing.T) {
	p := &countingStore{}
	ready := ops.NewReadiness()
	c := clocktest.New(time.Unix(1e9, 0))
	ready.RegisterStoreEvery(p, 10*time.Second, c.Now)
	check := func() bool { ok, _ := ready.Check(context.Background()); return ok }
	for range 5 {
		if !check() {
			t.Fatal("not ready")
		}
	}
	if p.probes.Load() != 1 {
		t.Errorf("%d probes within one interval, want 1", p.probes.Load())
	}
	p.fail.Store(true)
	if !check() {
		t.Error("a failure inside the interval is not seen until the next probe; the cached outcome was lost")
	}
	c.Add(10 * time.Second)
	if check() {
		t.Error("ready after the probe failed")
	}
	if p.probes.Load() != 2 {
		t.Errorf("%d probes after two intervals, want 2", p.probes.Load())
	}
}

// countingStore answers reads and counts write probes; fail makes them fail.
type countingStore struct {
	probes atomic.Int32
	fail   atomic.Bool
}

func (s *countingStore) Ping(context.Context) error          { return nil }
func (s *countingStore) SchemaCurrent(context.Context) error { return nil }
func (s *countingStore) WriteProbe(context.Context) error {
	s.probes.Add(1)
	if s.fail.Load() {
		return errors.New("read-only")
	}
	return nil
}
