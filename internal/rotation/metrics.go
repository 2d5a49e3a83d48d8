package rotation

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/keystore"
)

type metrics struct {
	rotations       *prometheus.CounterVec
	failures        *prometheus.CounterVec
	waiting         *prometheus.CounterVec
	checks          *prometheus.CounterVec
	domains         *prometheus.GaugeVec
	keys            *prometheus.GaugeVec
	oldestActiveAge prometheus.Gauge
	leader          prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dkimd_rotation_rotations_total",
			Help: "Key switches performed, by kind: domain (scheduled or requested), emergency, brand (fallback keys)."}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dkimd_rotation_failures_total",
			Help: "Rotation steps that failed, by reason: store, keygen, conflict (lost a race and retried), resolver."}, []string{"reason"}),
		waiting: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dkimd_rotation_waiting_total",
			Help: "Due switches that had to wait, by reason: the verdict of the new selector's CNAME, or resolver."}, []string{"reason"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dkimd_rotation_dns_checks_total",
			Help: "Checks of customers' selector CNAMEs, by verdict (error: the resolver failed)."}, []string{"verdict"}),
		domains: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dkimd_rotation_domains",
			Help: "Domains by status."}, []string{"status"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dkimd_rotation_keys",
			Help: "Keys of domains and brands by state."}, []string{"state"}),
		oldestActiveAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dkimd_rotation_oldest_active_key_age_seconds",
			Help: "Time since the oldest active key was published; above the rotation interval plus a few days, rotation is stuck."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dkimd_rotation_leader",
			Help: "1 while this replica holds the rotation lock and runs the loop; summed over replicas it must be 1."}),
	}
	for _, s := range []string{keystore.StatusPendingDNS, keystore.StatusActive, keystore.StatusDNSError} {
		m.domains.WithLabelValues(s)
	}
	// Every known label value exists from the start, so that dashboards and
	// alerts see zeros instead of no series on an idle replica.
	for _, k := range []string{"domain", "emergency", "brand"} {
		m.rotations.WithLabelValues(k)
	}
	for _, r := range []string{"store", "keygen", "conflict", "resolver"} {
		m.failures.WithLabelValues(r)
	}
	for _, v := range []string{VerdictOK, VerdictMissing, VerdictWrongTarget, VerdictKeyMismatch, "error"} {
		m.checks.WithLabelValues(v)
	}
	for _, r := range []string{"unchecked", "resolver", VerdictMissing, VerdictWrongTarget, VerdictKeyMismatch} {
		m.waiting.WithLabelValues(r)
	}
	for _, s := range []keystore.KeyState{keystore.StateNext, keystore.StateActive, keystore.StateRetiring, keystore.StateRevoked} {
		m.keys.WithLabelValues(string(s))
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rotations, m.failures, m.waiting, m.checks, m.domains, m.keys, m.oldestActiveAge, m.leader} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// record counts a committed domain step.
func (s *Service) record(o outcome) {
	for _, r := range o.checks {
		v := r.sc.Verdict
		if r.err != nil {
			v = "error"
			s.m.failures.WithLabelValues("resolver").Inc()
		}
		s.m.checks.WithLabelValues(v).Inc()
	}
	if o.waiting != "" {
		s.m.waiting.WithLabelValues(o.waiting).Inc()
		s.log.Info("rotation waits", slog.String("domain", o.d.Name), slog.String("reason", o.d.StatusReason))
	}
	if o.rotated {
		s.m.rotations.WithLabelValues("domain").Inc()
		s.log.Info("rotated domain key", slog.String("domain", o.d.Name), slog.String("selector", o.d.ActiveSelector))
	}
}

func (s *Service) updateGauges(ctx context.Context, now time.Time) error {
	st, err := s.store.DomainStatusCounts(ctx)
	if err != nil {
		return err
	}
	for _, status := range []string{keystore.StatusPendingDNS, keystore.StatusActive, keystore.StatusDNSError} {
		s.m.domains.WithLabelValues(status).Set(float64(st[status]))
	}
	ks, err := s.store.KeyStateCounts(ctx)
	if err != nil {
		return err
	}
	for _, state := range []keystore.KeyState{keystore.StateNext, keystore.StateActive, keystore.StateRetiring, keystore.StateRevoked} {
		s.m.keys.WithLabelValues(string(state)).Set(float64(ks[state]))
	}
	oldest, err := s.store.OldestActiveKeyPublishedAt(ctx)
	if err != nil {
		return err
	}
	age := 0.0
	if !oldest.IsZero() {
		age = now.Sub(oldest).Seconds()
	}
	s.m.oldestActiveAge.Set(age)
	return nil
}
