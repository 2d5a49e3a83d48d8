package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/keystore"
	"dkimd/internal/reqlog"
)

// reqInfo is what the layers of one request tell the access log.
type reqInfo struct {
	id    string
	brand string // the authenticated brand, or "operator"
	err   error  // the cause of a 5xx, for the log only
	// unmatched is set when no route matched, so that metrics do not take
	// the raw path as a label value.
	unmatched bool
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if i, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

// observe gives every request its id, and after it one access-log line and
// its metrics. It never logs credentials, bodies or query strings.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		info := &reqInfo{id: reqlog.RequestID(r.Header.Get("X-Request-Id"))}
		w.Header().Set("X-Request-Id", info.id)
		sw := &reqlog.StatusWriter{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		next.ServeHTTP(sw, r)

		if sw.Status == 0 {
			sw.Status = http.StatusOK
		}
		route := "unmatched" // bounded label values: never the raw path
		if rc := chi.RouteContext(r.Context()); rc != nil && !info.unmatched {
			route = rc.RoutePattern()
		}
		d := s.now().Sub(start)
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("route", route), slog.Int("status", sw.Status),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000), slog.String("brand", info.brand), slog.String("request_id", info.id),
			slog.String("remote", r.RemoteAddr),
		}
		level := slog.LevelInfo
		if info.err != nil {
			level = slog.LevelError
			if errors.Is(info.err, keystore.ErrUnavailable) {
				// The database is away: /readyz and the store's own log
				// say so; each 503 is expected until it returns.
				level = slog.LevelWarn
			}
			attrs = append(attrs, slog.String("err", info.err.Error()))
		}
		s.log.LogAttrs(r.Context(), level, "api request", attrs...)
		if s.metrics != nil {
			s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.Status)).Inc()
			s.metrics.duration.WithLabelValues(route, r.Method).Observe(d.Seconds())
		}
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				infoFrom(r.Context()).err = fmt.Errorf("panic: %v", v)
				s.fail(w, r, errInternal)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// Metrics are the API's request counter and latency histogram.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the API metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_api_requests_total",
			Help: "Requests to the brand and admin API, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dkimd_api_request_duration_seconds",
			Help:    "Time to answer a brand or admin API request, by route pattern and method.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
	}
	return m, nil
}
