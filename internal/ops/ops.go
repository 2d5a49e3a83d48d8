// Package ops serves the operator's view of a running dkimd: /metrics (the
// one injected Prometheus registry, with Go runtime and process collectors),
// /healthz (the process is up) and /readyz (the store answers, the schema is
// current and every registered readiness check passes).
//
// It owns no business state: subsystems register their metrics on the
// registry and their readiness checks on a Readiness. It must never expose
// key material, secrets or anything a brand sent.
package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// CheckTimeout bounds each readiness check, so one hung dependency turns
// /readyz into a 503 rather than a probe timeout that says nothing.
const CheckTimeout = 2 * time.Second

// Readiness is the set of named checks /readyz runs. Subsystems register
// theirs while starting (the DNS server registers "zone", for example); a
// check returns nil when that part of dkimd can serve.
type Readiness struct {
	mu     sync.Mutex
	checks []namedCheck
}

type namedCheck struct {
	name  string
	check func(context.Context) error
}

// NewReadiness returns an empty set of checks.
func NewReadiness() *Readiness { return &Readiness{} }

// Register adds a check. Registering a name again replaces the earlier check,
// so a subsystem that restarts does not leave a stale one behind.
func (r *Readiness) Register(name string, check func(ctx context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.checks {
		if r.checks[i].name == name {
			r.checks[i].check = check
			return
		}
	}
	r.checks = append(r.checks, namedCheck{name: name, check: check})
}

// CheckResult is one check's outcome as /readyz reports it.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Check runs every registered check in registration order, each under
// CheckTimeout, and reports whether all passed.
func (r *Readiness) Check(ctx context.Context) (ready bool, results []CheckResult) {
	r.mu.Lock()
	checks := slices.Clone(r.checks)
	r.mu.Unlock()
	ready = true
	for _, c := range checks {
		res := CheckResult{Name: c.name, OK: true}
		if err := runCheck(ctx, c.check); err != nil {
			ready = false
			res.OK = false
			res.Error = err.Error()
		}
		results = append(results, res)
	}
	return ready, results
}

func runCheck(ctx context.Context, check func(context.Context) error) (err error) {
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	defer func() {
		// A check that panics says "not ready", not "ops listener down".
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	return check(ctx)
}

// Store is what the built-in store checks need; *keystore.SQL has them.
type Store interface {
	Ping(ctx context.Context) error
	SchemaCurrent(ctx context.Context) error
	WriteProbe(ctx context.Context) error
}

// WriteProbeEvery is how often, at most, the "store" check writes: probes
// come every few seconds from each orchestrator and load balancer, and one
// small write per interval is enough to notice a store turned read-only.
const WriteProbeEvery = 10 * time.Second

// RegisterStore adds the "store" (the database answers and takes a write,
// at most every WriteProbeEvery) and "schema" (every migration this binary
// knows is applied) checks.
func (r *Readiness) RegisterStore(s Store) {
	r.RegisterStoreEvery(s, WriteProbeEvery, time.Now)
}

// RegisterStoreEvery is RegisterStore with the write probe's interval and
// clock given, for tests.
func (r *Readiness) RegisterStoreEvery(s Store, every time.Duration, now func() time.Time) {
	p := &writeProbe{probe: s.WriteProbe, every: every, now: now}
	r.Register("store", func(ctx context.Context) error {
		if err := s.Ping(ctx); err != nil {
			return err
		}
		return p.check(ctx)
	})
	r.Register("schema", s.SchemaCurrent)
}

// writeProbe runs a store's write probe at most once per interval and
// answers with the last outcome in between, so that a flood of /readyz
// requests is not a flood of writes.
type writeProbe struct {
	probe func(context.Context) error
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last time.Time
	err  error
}

func (p *writeProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.last.IsZero() && now.Sub(p.last) < p.every {
		return p.err
	}
	p.err, p.last = p.probe(ctx), now
	return p.err
}

// RegisterRuntime adds the Go runtime and process collectors and a
// dkimd_build_info gauge to reg.
func RegisterRuntime(reg prometheus.Registerer, version, dialect string) error {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dkimd_build_info",
		Help: "Always 1; the labels say which dkimd version and store dialect are running.",
	}, []string{"version", "dialect"})
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("ops: register collector: %w", err)
		}
	}
	info.WithLabelValues(version, dialect).Set(1)
	return nil
}

// Handler serves /metrics, /healthz and /readyz.
type Handler struct {
	mux *http.ServeMux
}

// NewHandler builds the ops handler over reg (gathered for /metrics) and
// ready (run for /readyz). Scrape errors are logged to log.
func NewHandler(reg *prometheus.Registry, ready *Readiness, log *slog.Logger) *Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slogErrorLog{log},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: true,
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, results := ready.Check(r.Context())
		body := readyBody{Status: "ready", Checks: results}
		status := http.StatusOK
		if !ok {
			body.Status = "not ready"
			status = http.StatusServiceUnavailable
			for _, res := range results {
				if !res.OK {
					log.Warn("not ready", slog.String("check", res.Name), slog.String("reason", res.Error))
				}
			}
		}
		writeJSON(w, status, body)
	})
	return &Handler{mux: mux}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type readyBody struct {
	Status string        `json:"status"`
	Checks []CheckResult `json:"checks"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing left to tell it
}

// slogErrorLog adapts slog to promhttp's Println-style error log.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	l.log.Error("metrics scrape", slog.String("err", fmt.Sprint(v...)))
}
